//! Redis access (S2, with S3's secrets part): TLS checked against the configured certificate
//! authority (only the right CA connects), a least-privilege ACL user is enough to run the
//! engine, and a wrong password is a clear error that is retried and never printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A certificate authority and a server certificate it signed for localhost and 127.0.0.1.
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

fn certificate_authority() -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "maestro test CA");
    (params.self_signed(&key).unwrap(), key)
}

fn pki() -> Pki {
    let (ca, ca_key) = certificate_authority();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let server = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki { ca_pem: ca.pem(), server_pem: server.pem(), server_key_pem: key.serialize_pem() }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A Redis with its plain port (the test's producer) and a TLS port (the engine's).
fn tls_redis(dir: &Path, pki: &Pki) -> (RedisServer, u16) {
    let tls_port = free_port();
    let extra = vec![
        ("tls-port".to_string(), tls_port.to_string()),
        ("tls-cert-file".to_string(), write(dir, "server.pem", &pki.server_pem)),
        ("tls-key-file".to_string(), write(dir, "server.key", &pki.server_key_pem)),
        ("tls-ca-cert-file".to_string(), write(dir, "ca.pem", &pki.ca_pem)),
        ("tls-auth-clients".to_string(), "no".to_string()),
    ];
    let server = RedisServer::start(RedisOptions { durable: false, extra }).unwrap_or_else(|e| panic!("{e}"));
    (server, tls_port)
}

/// How many of the nine streams have the engine's group (it creates them once connected).
fn groups_created(conn: &mut redis::Connection) -> usize {
    streams().iter().filter_map(|s| maestro::groups::group_state(conn, s, GROUP)).count()
}

#[test]
fn tls_connects_only_with_the_right_certificate_authority() {
    let certs = tempfile::tempdir().unwrap();
    let pki = pki();
    let (server, tls_port) = tls_redis(certs.path(), &pki);
    let mut conn = connect(&server);
    let url = format!("rediss://localhost:{tls_port}");
    let data = tempfile::tempdir().unwrap();

    // A CA that did not sign the server's certificate: no connection, a named reason, retries.
    let (other_ca, _) = certificate_authority();
    let wrong_ca = write(certs.path(), "other-ca.pem", &other_ca.pem());
    let refused_dir = data.path().join("refused");
    let mut engine = EngineProc::start(&url, &refused_dir, &[("MAESTRO_REDIS_CA_FILE", &wrong_ca)]);
    let produced = produce(&mut conn, 90, 5, true);
    std::thread::sleep(Duration::from_secs(3));
    assert!(engine.child.try_wait().unwrap().is_none(), "a refused certificate is retried, not fatal");
    assert_eq!(groups_created(&mut conn), 0, "nothing was done over a connection whose certificate was refused");
    engine.terminate();
    let stderr = engine.stderr();
    assert!(!stderr.contains("connected to redis"), "{stderr}");
    assert!(stderr.contains("redis unavailable") && stderr.to_lowercase().contains("certificate"), "{stderr}");

    // The CA that signed it: everything is recorded.
    let ca = write(certs.path(), "right-ca.pem", &pki.ca_pem);
    let dir = data.path().join("engine");
    let mut engine = EngineProc::start(&url, &dir, &[("MAESTRO_REDIS_CA_FILE", &ca)]);
    wait_drained(&mut conn, Duration::from_secs(60));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    assert_exactly_once(&produced, &export(&dir));
}

#[test]
fn a_least_privilege_user_runs_the_engine_and_a_wrong_password_is_retried_and_never_printed() {
    let server = redis(false);
    let mut conn = connect(&server);
    let password = format!("pw-{}", std::process::id() as u64 * 7919 + 104_729);
    // What the engine needs and no more: its own keys, stream commands, its publish script,
    // the anchor key and the server clock. Documented in docs/operations.md.
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("maestro")
        .arg("on")
        .arg(format!(">{password}"))
        .arg("resetkeys")
        .arg("~maestro:*")
        .arg("-@all")
        .arg("+@stream")
        .arg("+@scripting")
        .arg("+hget")
        .arg("+hset")
        .arg("+get")
        .arg("+set")
        .arg("+ping")
        .arg("+time")
        .arg("+hello")
        .query::<()>(&mut conn)
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = server.port();

    let wrong = format!("redis://maestro:not-{password}@127.0.0.1:{port}");
    let refused_dir = data.path().join("refused");
    let mut engine = EngineProc::start(&wrong, &refused_dir, &[]);
    let started = Instant::now();
    while !engine.stderr().contains("redis unavailable") && started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(engine.child.try_wait().unwrap().is_none(), "a wrong password is retried, not fatal");
    engine.terminate();
    let stderr = engine.stderr();
    assert!(stderr.contains("redis unavailable") && stderr.contains("authentication failed"), "{stderr}");
    assert!(!stderr.contains(&password), "the password was printed:\n{stderr}");

    let url = format!("redis://maestro:{password}@127.0.0.1:{port}");
    let dir = data.path().join("engine");
    let mut engine = EngineProc::start(&url, &dir, &[]);
    let produced = produce(&mut conn, 180, 9, true);
    wait_drained(&mut conn, Duration::from_secs(60));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    assert!(!engine.stderr().contains(&password), "the password was printed");
    assert!(!engine.stderr().contains("NOPERM"), "the documented ACL is not enough:\n{}", engine.stderr());
    assert_exactly_once(&produced, &export(&dir));
    // The user can do nothing beyond that: another key, or a command outside the list.
    let mut engine_conn = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let other_key: redis::RedisResult<()> = redis::cmd("SET").arg("other:key").arg("x").query(&mut engine_conn);
    let flush: redis::RedisResult<()> = redis::cmd("FLUSHALL").query(&mut engine_conn);
    for result in [other_key, flush] {
        assert_eq!(result.unwrap_err().code(), Some("NOPERM"));
    }
}
