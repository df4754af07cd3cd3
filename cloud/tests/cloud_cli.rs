//! The operator's commands on a real data directory and a running cloud: init, run, status
//! (human and JSON), enroll-code, api-token, revoke; file modes; no secret in any log.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_run_status_and_operator_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cloud");
    let d = data.to_str().unwrap();

    // Before init, commands refuse with the fix instead of creating a stray directory.
    let (ok, _, err) = cli(&["status", "--data", d]);
    assert!(!ok && err.contains("outpost-cloud init"), "{err}");
    assert!(!data.exists());

    let out = cli_ok(&["init", "--data", d]);
    assert!(out.contains("initialized"), "{out}");
    let site = std::fs::read_to_string(data.join("site-id")).unwrap();
    assert!(out.contains(site.trim()));
    assert_eq!(mode(&data), 0o700);
    for f in [
        "identity.key",
        "tenant.db",
        "mailbox.db",
        "allowlist.db",
        "control.db",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    // init again changes nothing.
    assert!(cli_ok(&["init", "--data", d]).contains("already initialized"));
    assert_eq!(std::fs::read_to_string(data.join("site-id")).unwrap(), site);

    let token = cli_ok(&["api-token", "--data", d, "field-app"]);
    let token = token.trim().to_string();
    assert!(token.starts_with("outpost_api_"), "{token}");
    let (ok, _, err) = cli(&["api-token", "--data", d, "field-app"]);
    assert!(!ok && err.contains("already exists"), "{err}");

    // enroll-code: needs a kind, and an address before the first run.
    let (ok, _, err) = cli(&["enroll-code", "--data", d]);
    assert!(!ok && err.contains("--hub or --device"), "{err}");
    let (ok, _, err) = cli(&["enroll-code", "--data", d, "--device"]);
    assert!(!ok && err.contains("--address"), "{err}");

    let run = start(&data);
    assert_eq!(mode(&data.join("tls/key.pem")), 0o600);
    let code = cli_ok(&["enroll-code", "--data", d, "--hub", "--no-qr"]);
    let code = code.trim();
    assert!(code.starts_with("outpost:"), "{code}");
    let decoded = outpost_relay::enroll::EnrollCode::decode(code).unwrap();
    assert_eq!(decoded.addresses, vec![run.protocol.clone()]);
    assert_eq!(decoded.hub_site.to_string(), site.trim());
    let with_qr = cli_ok(&[
        "enroll-code",
        "--data",
        d,
        "--device",
        "--address",
        "cloud.example.org:7430",
    ]);
    assert!(with_qr.lines().count() > 20, "QR code rendered");

    // The REST API answers with the token, and status shows its use.
    let rest = Rest::new(&data, &run.https, &token);
    assert_eq!(rest.get_with(None), 401);
    assert_eq!(rest.get_with(Some("Bearer outpost_api_wrong")), 401);
    let (status, pull) = rest.pull(None);
    assert_eq!(status, 200, "{pull}");
    assert!(pull["changes"].as_object().unwrap().is_empty());

    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&["status", "--data", d, "--json"])).unwrap();
    assert_eq!(json["site"], site.trim());
    assert_eq!(json["https"], run.https.as_str());
    assert_eq!(json["listen"], run.protocol.as_str());
    assert_eq!(json["mailbox"]["batches"], 0);
    assert_eq!(json["mailbox"]["damaged"], 0);
    assert_eq!(json["api_tokens"][0]["name"], "field-app");
    assert!(json["api_tokens"][0]["last_used"].is_u64());
    let human = cli_ok(&["status", "--data", d]);
    assert!(
        human.contains(&format!("cloud site {}", site.trim())),
        "{human}"
    );
    assert!(human.contains("field-app"), "{human}");

    // Revoking the token locks the client out at once.
    cli_ok(&["revoke", "--data", d, "--api-token", "field-app"]);
    assert_eq!(rest.get_with(Some(&format!("Bearer {token}"))), 401);
    let (ok, _, err) = cli(&["revoke", "--data", d, "0000"]);
    assert!(!ok && err.contains("no enrolled device"), "{err}");

    // Secrets never reach the logs: neither the API token nor the enrollment token.
    drop(run);
    let log = std::fs::read_to_string(data.with_extension("stderr")).unwrap();
    assert!(!log.contains(&token));
    assert!(!log.contains(code));
    let (_, _, err) = cli(&["status", "--data", d]);
    assert!(!err.contains(&token));
}

#[test]
fn a_data_directory_made_by_hand_or_left_wide_is_made_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cloud");
    let d = data.to_str().unwrap();
    // An operator's `mkdir` under a umask of 022: the directory is 0755 before init.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    cli_ok(&["init", "--data", d]);
    assert_eq!(mode(&data), 0o700);
    // A copy (or an earlier version) left the files wide: the next command narrows them.
    for f in ["identity.key", "tenant.db", "control.db"] {
        std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, _, err) = cli(&["status", "--data", d]);
    assert!(ok, "{err}");
    assert!(err.contains("now private"), "each change is logged: {err}");
    assert_eq!(mode(&data), 0o700);
    for f in [
        "identity.key",
        "tenant.db",
        "control.db",
        "mailbox.db",
        "allowlist.db",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}

/// `init` makes a sealed tenant unless told `--unsealed`; a tenant stays what it was made.
#[test]
fn init_makes_a_sealed_tenant_by_default_and_a_tenant_stays_what_it_was_made() {
    let tmp = tempfile::tempdir().unwrap();
    let sealed = tmp.path().join("sealed");
    let s = sealed.to_str().unwrap();
    assert!(cli_ok(&["init", "--data", s]).contains("tenant sealed"));
    assert!(cli_ok(&["init", "--data", s]).contains("tenant sealed"));
    let (ok, _, err) = cli(&["init", "--unsealed", "--data", s]);
    assert!(!ok && err.contains("stays sealed"), "{err}");

    let open = tmp.path().join("unsealed");
    let o = open.to_str().unwrap();
    assert!(cli_ok(&["init", "--unsealed", "--data", o]).contains("tenant unsealed"));
    assert!(cli_ok(&["init", "--data", o]).contains("tenant unsealed"));
    let (ok, _, err) = cli(&["init", "--sealed", "--data", o]);
    assert!(!ok && err.contains("sealed when it is made"), "{err}");
}
