//! Test certificates made with the `openssl` command: a CA of the test's own and
//! certificates it signed (for 127.0.0.1, or in a Kubernetes TLS Secret's layout for the
//! links between the gateway and the agents).

use std::path::Path;
use std::process::Command;

/// The curve of every test key.
const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/// A CA and a certificate for 127.0.0.1 signed by it, with `openssl`: (CA, cert, key).
pub fn certificates(dir: &Path) -> anyhow::Result<(String, String, String)> {
    let path = |name: &str| dir.join(name).display().to_string();
    let (ca, ca_key) = authority(dir, "ca")?;
    let (cert, key) = (path("cert.pem"), path("key.pem"));
    let signed = Signed {
        ca: &ca,
        ca_key: &ca_key,
        cn: "127.0.0.1",
        extensions: "subjectAltName=IP:127.0.0.1\n",
    };
    signed.write(dir, &cert, &key)?;
    Ok((ca, cert, key))
}

/// `dir` laid out as the agents' TLS Secret: `ca.crt`, and `tls.crt`/`tls.key` for the
/// name `inferpool-agent` alone (no address: the gateway must verify the configured name,
/// not the one it dialled), usable as server and as client certificate.
pub fn agent_secret(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = |name: &str| dir.join(name).display().to_string();
    let (ca, ca_key) = authority(dir, "ca")?;
    std::fs::rename(&ca, path("ca.crt"))?;
    let signed = Signed {
        ca: &path("ca.crt"),
        ca_key: &ca_key,
        cn: "inferpool-agent",
        extensions: "subjectAltName=DNS:inferpool-agent\n\
                     extendedKeyUsage=serverAuth,clientAuth\n",
    };
    signed.write(dir, &path("tls.crt"), &path("tls.key"))?;
    // The CA's key is no part of a Secret.
    std::fs::remove_file(ca_key)?;
    Ok(())
}

/// A client certificate and key from a CA of its own (one the agents do not trust):
/// (cert, key).
pub fn foreign_client(dir: &Path) -> anyhow::Result<(String, String)> {
    std::fs::create_dir_all(dir)?;
    let (ca, ca_key) = authority(dir, "foreign-ca")?;
    let path = |name: &str| dir.join(name).display().to_string();
    let (cert, key) = (path("foreign.crt"), path("foreign.key"));
    let signed = Signed {
        ca: &ca,
        ca_key: &ca_key,
        cn: "intruder",
        extensions: "extendedKeyUsage=clientAuth\n",
    };
    signed.write(dir, &cert, &key)?;
    Ok((cert, key))
}

/// A self-signed CA in `dir`: (`<name>.pem`, `<name>.key`).
fn authority(dir: &Path, name: &str) -> anyhow::Result<(String, String)> {
    let ca = dir.join(format!("{name}.pem")).display().to_string();
    let key = dir.join(format!("{name}.key")).display().to_string();
    openssl(&format!(
        "req -x509 {EC} -days 2 -subj /CN=inferpool-test-{name} -keyout {key} -out {ca}"
    ))?;
    Ok((ca, key))
}

/// A certificate for `cn` with `extensions`, signed by `ca`.
struct Signed<'a> {
    ca: &'a str,
    ca_key: &'a str,
    cn: &'a str,
    extensions: &'a str,
}

impl Signed<'_> {
    /// Writes the certificate to `cert` and its key to `key` (work files go in `dir`).
    fn write(&self, dir: &Path, cert: &str, key: &str) -> anyhow::Result<()> {
        let work = |ext: &str| dir.join(format!("{}.{ext}", self.cn)).display().to_string();
        let (csr, ext) = (work("csr"), work("ext"));
        std::fs::write(&ext, self.extensions)?;
        openssl(&format!(
            "req {EC} -subj /CN={} -keyout {key} -out {csr}",
            self.cn
        ))?;
        openssl(&format!(
            "x509 -req -in {csr} -CA {} -CAkey {} -CAcreateserial -days 2 -extfile {ext} -out {cert}",
            self.ca, self.ca_key
        ))?;
        Ok(())
    }
}

/// Runs `openssl` with the space-separated `args`.
fn openssl(args: &str) -> anyhow::Result<()> {
    let args: Vec<&str> = args.split(' ').collect();
    let out = Command::new("openssl").args(&args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
