//! [`Engine`] over the Docker Engine API with bollard.

use super::*;

pub struct DockerEngine {
    docker: bollard::Docker,
    endpoint: String,
}

impl DockerEngine {
    /// Connects using DOCKER_HOST (unix, tcp, https/tls with DOCKER_CERT_PATH) or the default
    /// socket, and negotiates the API version.
    pub async fn connect() -> Result<DockerEngine> {
        todo!("connect")
    }
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    #[allow(dead_code)]
    fn raw(&self) -> &bollard::Docker {
        &self.docker
    }
}

#[async_trait]
impl Engine for DockerEngine {
    async fn info(&self) -> Result<EngineInfo> {
        todo!()
    }
    async fn image_exists(&self, image: &str) -> Result<bool> {
        todo!()
    }
    async fn pull_image(&self, image: &str, progress: &(dyn Fn(PullProgress) + Send + Sync)) -> Result<()> {
        todo!()
    }
    async fn list_containers(&self, labels: &Labels) -> Result<Vec<ContainerInfo>> {
        todo!()
    }
    async fn inspect_container(&self, id_or_name: &str) -> Result<ContainerInfo> {
        todo!()
    }
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        todo!()
    }
    async fn start_container(&self, id: &str) -> Result<()> {
        todo!()
    }
    async fn stop_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()> {
        todo!()
    }
    async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        todo!()
    }
    async fn logs(&self, id: &str, tail: usize) -> Result<String> {
        todo!()
    }
    async fn exec(&self, id: &str, cmd: &[String], env: &[String], user: Option<&str>) -> Result<ExecOutput> {
        todo!()
    }
    async fn exec_stream(&self, id: &str, cmd: &[String], env: &[String], user: Option<&str>) -> Result<(String, ByteStream)> {
        todo!()
    }
    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>> {
        todo!()
    }
    async fn download_archive(&self, id: &str, path: &str) -> Result<ByteStream> {
        todo!()
    }
    async fn upload_archive(&self, id: &str, path: &str, tar: ByteStream) -> Result<()> {
        todo!()
    }
    async fn list_volumes(&self, labels: &Labels) -> Result<Vec<VolumeInfo>> {
        todo!()
    }
    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>> {
        todo!()
    }
    async fn create_volume(&self, name: &str, labels: &Labels) -> Result<VolumeInfo> {
        todo!()
    }
    async fn remove_volume(&self, name: &str) -> Result<()> {
        todo!()
    }
    async fn list_networks(&self, labels: &Labels) -> Result<Vec<NetworkInfo>> {
        todo!()
    }
    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>> {
        todo!()
    }
    async fn create_network(&self, name: &str, labels: &Labels) -> Result<String> {
        todo!()
    }
    async fn connect_network(&self, network: &str, container: &str, aliases: &[String]) -> Result<()> {
        todo!()
    }
    async fn remove_network(&self, name: &str) -> Result<()> {
        todo!()
    }
}
