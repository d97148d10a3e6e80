//! Locating the parts tests need, outside the repository.
//!
//! Under CI (`CI=true`) a missing part is a failure, never a silent skip; on a developer
//! machine the message says which command provides it.

use std::path::{Path, PathBuf};

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `$INFERPOOL_CACHE`, default `~/.cache/inferpool`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("INFERPOOL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/inferpool")
        })
}

/// `$INFERPOOL_MODELS`, default `$INFERPOOL_CACHE/models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("INFERPOOL_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models"))
}

/// The default model file fetched by `hack/fetch-models`.
pub fn default_model() -> anyhow::Result<PathBuf> {
    let path = models_dir().join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    require(&path, "hack/fetch-models")
}

/// Fails with a pointer to the command that provides `path` when it is missing.
pub fn require(path: &Path, provided_by: &str) -> anyhow::Result<PathBuf> {
    if path.exists() {
        return Ok(path.to_owned());
    }
    anyhow::bail!("{} is missing: run `{provided_by}` first", path.display())
}

/// The folder of control-plane binaries built by `hack/controlplane/build`, as named by
/// the build script itself (it prints the folder).
pub fn controlplane_bin() -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new(repo_root().join("hack/controlplane/bin-dir")).output()?;
    anyhow::ensure!(out.status.success(), "hack/controlplane/bin-dir failed");
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    require(&dir.join("kube-apiserver"), "hack/controlplane/build")?;
    Ok(dir)
}

/// A binary of this workspace built alongside this test (`cargo test --workspace` builds
/// every binary before running tests): target/<profile>/deps/<test> -> target/<profile>/<name>.
fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("no target dir"))?;
    require(&dir.join(name), &format!("cargo build --bin {name}"))
}

/// The `inferpool-operator` binary.
pub fn operator_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("inferpool-operator")
}

/// The embedding model directory fetched by `hack/fetch-models`.
pub fn embedding_model() -> anyhow::Result<PathBuf> {
    let path = models_dir().join("all-minilm-l6-v2");
    require(&path.join("model.safetensors"), "hack/fetch-models")?;
    Ok(path)
}

/// The `inferpool-agent` binary.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("inferpool-agent")
}

/// A fresh directory under the system temp dir, removed when dropped.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `inferpool-<name>-<pid>-<n>`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("inferpool-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Python of the environment with the `openai` client, made by `hack/python-env`
/// (which prints it; it does nothing when the environment exists).
pub fn openai_python() -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new(repo_root().join("hack/python-env")).output()?;
    anyhow::ensure!(
        out.status.success(),
        "hack/python-env failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    require(
        Path::new(String::from_utf8(out.stdout)?.trim()),
        "hack/python-env",
    )
}
