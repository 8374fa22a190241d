//! Connection checks against the real Dovecot and Postfix that `scripts/mail-servers.sh` starts
//! on loopback (`scripts/test.sh` starts them and exports `HERALD_TEST_*`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_mailbox::connect::{Failure, Security, ServerSettings, Side, check_imap, check_smtp};
use secrecy::SecretString;

use herald_testdb::mail_env as env;

fn port(name: &str) -> u16 {
    env(name).parse().unwrap()
}

fn server(port: u16, security: Security, user: &str, password: &str) -> ServerSettings {
    ServerSettings {
        host: env("HERALD_TEST_IMAP_HOST"),
        port,
        security,
        username: user.into(),
        password: SecretString::from(password.to_owned()),
        verify_tls: false,
    }
}

#[tokio::test]
async fn imap_login_succeeds_in_plain_starttls_and_tls() {
    for (p, security) in [
        (port("HERALD_TEST_IMAP_PORT"), Security::None),
        (port("HERALD_TEST_IMAP_PORT"), Security::Starttls),
        (port("HERALD_TEST_IMAPS_PORT"), Security::Tls),
    ] {
        let report = check_imap(&server(p, security, "alice@herald.test", "alice-pass"))
            .await
            .unwrap_or_else(|e| panic!("{security:?}: {e}"));
        assert!(
            report.capabilities.iter().any(|c| c == "IMAP4rev1"),
            "{:?}",
            report.capabilities
        );
        assert!(
            report.capabilities.iter().any(|c| c == "IDLE"),
            "{:?}",
            report.capabilities
        );
    }
}

#[tokio::test]
async fn imap_failures_say_what_went_wrong() {
    let imap = port("HERALD_TEST_IMAP_PORT");
    let err = check_imap(&server(imap, Security::None, "alice@herald.test", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.side, Side::Imap);
    assert!(matches!(err.failure, Failure::BadCredentials(_)), "{err}");

    // The self-signed certificate is not trusted when verification is on.
    let mut strict = server(
        port("HERALD_TEST_IMAPS_PORT"),
        Security::Tls,
        "alice@herald.test",
        "alice-pass",
    );
    strict.verify_tls = true;
    let err = check_imap(&strict).await.unwrap_err();
    assert!(matches!(err.failure, Failure::Tls(_)), "{err}");

    // Nothing listens on port 1.
    let err = check_imap(&server(1, Security::None, "a", "b"))
        .await
        .unwrap_err();
    assert!(matches!(err.failure, Failure::Refused(_)), "{err}");

    let mut nowhere = server(imap, Security::None, "a", "b");
    nowhere.host = "no-such-host.invalid".into();
    let err = check_imap(&nowhere).await.unwrap_err();
    assert!(matches!(err.failure, Failure::Dns(_)), "{err}");
    assert!(
        err.to_string()
            .starts_with("imap: the host name does not resolve"),
        "{err}"
    );
}

#[tokio::test]
async fn smtp_handshake_and_authentication_are_checked() {
    let submission = port("HERALD_TEST_SUBMISSION_PORT");
    let report = check_smtp(&server(
        submission,
        Security::Starttls,
        "carol@herald.test",
        "carol-pass",
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.capabilities.iter().any(|c| c == "AUTH"),
        "{:?}",
        report.capabilities
    );

    let err = check_smtp(&server(
        submission,
        Security::Starttls,
        "carol@herald.test",
        "wrong",
    ))
    .await
    .unwrap_err();
    assert_eq!(err.side, Side::Smtp);
    assert!(matches!(err.failure, Failure::BadCredentials(_)), "{err}");

    let mut strict = server(
        submission,
        Security::Starttls,
        "carol@herald.test",
        "carol-pass",
    );
    strict.verify_tls = true;
    let err = check_smtp(&strict).await.unwrap_err();
    assert!(matches!(err.failure, Failure::Tls(_)), "{err}");

    let err = check_smtp(&server(1, Security::None, "a", "b"))
        .await
        .unwrap_err();
    assert!(matches!(err.failure, Failure::Refused(_)), "{err}");
}
