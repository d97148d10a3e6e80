//! Test certificates made with the `openssl` command: a CA of the test's own and a
//! certificate for 127.0.0.1 that it signed.

use std::path::Path;
use std::process::Command;

/// A CA and a certificate for 127.0.0.1 signed by it, with `openssl`: (CA, cert, key).
pub fn certificates(dir: &Path) -> anyhow::Result<(String, String, String)> {
    let path = |name: &str| dir.join(name).display().to_string();
    let (ca, ca_key, cert, key, csr, ext) = (
        path("ca.pem"),
        path("ca.key"),
        path("cert.pem"),
        path("key.pem"),
        path("cert.csr"),
        path("san.ext"),
    );
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n")?;
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let ca_run =
        format!("req -x509 {ec} -days 2 -subj /CN=inferpool-test-ca -keyout {ca_key} -out {ca}");
    let key_run = format!("req {ec} -subj /CN=127.0.0.1 -keyout {key} -out {csr}");
    let sign_run = format!(
        "x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -days 2 -extfile {ext} -out {cert}"
    );
    let runs = [ca_run, key_run, sign_run];
    for run in runs {
        let args: Vec<&str> = run.split(' ').collect();
        let out = Command::new("openssl").args(&args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((ca, cert, key))
}
