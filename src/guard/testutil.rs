//! Test helpers: an [`Engine`] whose `exec` runs the command on this host (so the exec paths of
//! the census can be exercised against local servers) and which fails everything else.

use async_trait::async_trait;

use crate::engine::*;

pub struct LocalExecEngine {
    /// Extra environment for every exec (e.g. PGHOST pointing at a local socket dir).
    pub env: Vec<(String, String)>,
}

fn no<T>(op: &'static str) -> Result<T> {
    Err(EngineError::api(
        op,
        "test",
        "not supported by LocalExecEngine",
    ))
}

#[async_trait]
impl Engine for LocalExecEngine {
    async fn info(&self) -> Result<EngineInfo> {
        Ok(EngineInfo {
            id: "TEST:ENGINE".into(),
            server_version: "0".into(),
            api_version: "0".into(),
            endpoint: "local".into(),
            operating_system: "linux".into(),
        })
    }
    async fn image_exists(&self, _: &str) -> Result<bool> {
        no("image_exists")
    }
    async fn pull_image(&self, _: &str, _: &(dyn Fn(PullProgress) + Send + Sync)) -> Result<()> {
        no("pull_image")
    }
    async fn build_image(
        &self,
        _: &BuildOptions,
        _: ContextStream,
        _: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<String> {
        no("build_image")
    }
    async fn list_containers(&self, _: &Labels) -> Result<Vec<ContainerInfo>> {
        no("list_containers")
    }
    async fn inspect_container(&self, _: &str) -> Result<ContainerInfo> {
        no("inspect_container")
    }
    async fn create_container(&self, _: &ContainerSpec) -> Result<String> {
        no("create_container")
    }
    async fn start_container(&self, _: &str) -> Result<()> {
        no("start_container")
    }
    async fn stop_container(&self, _: &str, _: Option<i64>) -> Result<()> {
        no("stop_container")
    }
    async fn remove_container(&self, _: &str, _: bool) -> Result<()> {
        no("remove_container")
    }
    async fn logs(&self, _: &str, _: usize) -> Result<String> {
        no("logs")
    }
    async fn exec(
        &self,
        _id: &str,
        cmd: &[String],
        env: &[String],
        _user: Option<&str>,
    ) -> Result<ExecOutput> {
        let mut c = tokio::process::Command::new(&cmd[0]);
        c.args(&cmd[1..]);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        for kv in env {
            if let Some((k, v)) = kv.split_once('=') {
                c.env(k, v);
            }
        }
        let out = c
            .output()
            .await
            .map_err(|e| EngineError::api("exec", cmd[0].clone(), e))?;
        Ok(ExecOutput {
            exit_code: out.status.code().unwrap_or(-1) as i64,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
    async fn exec_stream(
        &self,
        _: &str,
        _: &[String],
        _: &[String],
        _: Option<&str>,
    ) -> Result<(String, ByteStream)> {
        no("exec_stream")
    }
    async fn exec_exit_code(&self, _: &str) -> Result<Option<i64>> {
        no("exec_exit_code")
    }
    async fn download_archive(&self, _: &str, _: &str) -> Result<ByteStream> {
        no("download_archive")
    }
    async fn upload_archive(&self, _: &str, _: &str, _: ByteStream) -> Result<()> {
        no("upload_archive")
    }
    async fn list_volumes(&self, _: &Labels) -> Result<Vec<VolumeInfo>> {
        no("list_volumes")
    }
    async fn inspect_volume(&self, _: &str) -> Result<Option<VolumeInfo>> {
        Ok(None)
    }
    async fn create_volume(&self, _: &str, _: &Labels) -> Result<VolumeInfo> {
        no("create_volume")
    }
    async fn remove_volume(&self, _: &str) -> Result<()> {
        no("remove_volume")
    }
    async fn list_networks(&self, _: &Labels) -> Result<Vec<NetworkInfo>> {
        no("list_networks")
    }
    async fn inspect_network(&self, _: &str) -> Result<Option<NetworkInfo>> {
        no("inspect_network")
    }
    async fn create_network(&self, _: &str, _: &Labels) -> Result<String> {
        no("create_network")
    }
    async fn connect_network(&self, _: &str, _: &str, _: &[String]) -> Result<()> {
        no("connect_network")
    }
    async fn remove_network(&self, _: &str) -> Result<()> {
        no("remove_network")
    }
    async fn log_stream(&self, _: &str, _: &LogOptions) -> Result<OutputStream> {
        no("log_stream")
    }
    async fn exec_attach(&self, _: &str, _: &ExecSpec) -> Result<Attached> {
        no("exec_attach")
    }
    async fn resize_exec(&self, _: &str, _: u16, _: u16) -> Result<()> {
        no("resize_exec")
    }
    async fn attach_container(&self, _: &str) -> Result<Attached> {
        no("attach_container")
    }
    async fn resize_container(&self, _: &str, _: u16, _: u16) -> Result<()> {
        no("resize_container")
    }
    async fn wait_container(&self, _: &str) -> Result<i64> {
        no("wait_container")
    }
    async fn top(&self, _: &str) -> Result<TopInfo> {
        no("top")
    }
    async fn inspect_image(&self, _: &str) -> Result<Option<ImageInfo>> {
        no("inspect_image")
    }
    async fn container_addresses(&self, _: &str) -> Result<Vec<(String, String)>> {
        no("container_addresses")
    }
}

/// A running container as the census sees it.
pub fn container(env: &[&str], ports: &[(u16, u16)]) -> ContainerInfo {
    ContainerInfo {
        id: "test-container".into(),
        name: "nt-guard-db-1".into(),
        image: "postgres:15".into(),
        labels: Default::default(),
        state: RunState::Running,
        health: Health::Healthy,
        exit_code: None,
        oom_killed: false,
        started_at: None,
        finished_at: None,
        ports: ports
            .iter()
            .map(|(c, h)| PublishedPort {
                container_port: *c,
                protocol: "tcp".into(),
                host_ip: "127.0.0.1".into(),
                host_port: *h,
            })
            .collect(),
        mounts: vec![],
        env: env.iter().map(|s| s.to_string()).collect(),
        stop_signal: None,
        stop_timeout_secs: None,
        networks: vec![],
        network_ids: Default::default(),
    }
}

/// psql against a local server on 127.0.0.1 (local-server tests).
pub fn psql(port: u16, pw: &str, db: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ])
        .env("PGPASSWORD", pw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
