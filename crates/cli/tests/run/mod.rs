//! Running the `paymux` binary against one database, as an operator would.

use std::process::Command;

/// Runs `paymux ARGS --database-url DB_URL`: whether it succeeded, its stdout and its stderr.
pub fn paymux(db_url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_paymux"))
        .args(args)
        .args(["--database-url", db_url])
        .env_remove("PAYMUX_MASTER_KEY")
        .env_remove("PAYMUX_MASTER_KEY_FILE")
        .env("PAYMUX_LOG", "warn")
        .output()
        .expect("paymux runs");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}
