//! curl as the test's HTTP/2 and TLS client: a widely used client, with its own HTTP/2
//! (nghttp2) and TLS (OpenSSL) stacks, rather than the ones the gateway is built on.

use std::process::Command;

use serde_json::Value;

/// What curl got: status, HTTP version and body.
#[derive(Debug)]
pub struct Got {
    /// The status (0 when none came).
    pub status: u16,
    /// The HTTP version, as curl names it (`1.1`, `2`).
    pub version: String,
    /// The body.
    pub body: String,
}

/// Runs curl with `args`, POSTing `body` when given.
pub fn curl(args: &[&str], body: Option<&Value>) -> anyhow::Result<Got> {
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "--max-time",
        "60",
        "-w",
        "\n%{http_code} %{http_version}",
    ]);
    command.args(args);
    if let Some(body) = body {
        command.args(["-H", "content-type: application/json", "--data-binary"]);
        command.arg(body.to_string());
    }
    let out = command.output()?;
    anyhow::ensure!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, version) = tail.split_once(' ').unwrap_or((tail, ""));
    Ok(Got {
        status: status.parse().unwrap_or(0),
        version: version.to_owned(),
        body: body.to_owned(),
    })
}
