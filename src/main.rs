fn main() -> std::process::ExitCode {
    nodus::run()
}
