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
