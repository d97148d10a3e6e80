//! TLS on the agents' API ports (`--agent-tls-secret`): the parts of an agent pod that
//! mount the Secret and turn the agent's TLS on. The Secret is the same for every pool and
//! must exist in each pool's namespace (a pod can only mount Secrets of its own).

use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};

use super::names::HEALTH_PORT;

/// Where the agent finds `tls.crt`, `tls.key` and `ca.crt`.
pub const TLS_DIR: &str = "/etc/inferpool/tls";
const TLS_VOLUME: &str = "agent-tls";
/// Read-only for the owner (root) and the group, which the pod's fsGroup makes the agent's;
/// nobody else may read the key.
const TLS_MODE: i32 = 0o440;

/// How the agents' API ports speak TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTls {
    /// Name of the Secret (`tls.crt`, `tls.key`, `ca.crt`) in each pool's namespace.
    pub secret: String,
    /// Whether the agents require client certificates signed by its `ca.crt`.
    pub mutual: bool,
}

/// `--agent-tls-mutual` without a Secret: there would be no CA to check clients against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("--agent-tls-mutual needs --agent-tls-secret")]
pub struct MutualWithoutSecret;

impl AgentTls {
    /// From the flags: no Secret name (or an empty one, as an unset chart value renders)
    /// means plain HTTP and h2c.
    pub fn from_flags(
        secret: Option<&str>,
        mutual: bool,
    ) -> Result<Option<Self>, MutualWithoutSecret> {
        match secret.filter(|s| !s.is_empty()) {
            Some(secret) => Ok(Some(Self {
                secret: secret.to_owned(),
                mutual,
            })),
            None if mutual => Err(MutualWithoutSecret),
            None => Ok(None),
        }
    }

    /// The agent's extra `serve` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--tls-dir".to_owned(),
            TLS_DIR.to_owned(),
            "--health-port".to_owned(),
            HEALTH_PORT.to_string(),
        ];
        if self.mutual {
            args.push("--tls-mutual".to_owned());
        }
        args
    }

    /// The pod's volume from the Secret. Not optional: an agent must not start in plain
    /// text because its Secret is missing; the pod waits for it (FailedMount events).
    pub fn volume(&self) -> Volume {
        Volume {
            name: TLS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(self.secret.clone()),
                default_mode: Some(TLS_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }
    }

    /// The agent container's mount of [`AgentTls::volume`]: the whole directory, never
    /// subPaths, which kubelet would not update when the certificate is renewed.
    pub fn mount(&self) -> VolumeMount {
        VolumeMount {
            name: TLS_VOLUME.to_owned(),
            mount_path: TLS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }
    }
}
