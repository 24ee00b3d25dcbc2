//! The CLI's own surface: profiles and their precedence, `login`, `status`,
//! completions and help.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// `tailwater ARGS…` with only the environment given: no server, token or
/// profile from the test's own environment, config under `config_home`.
fn bare(config_home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_remove("TAILWATER_SERVER")
        .env_remove("TAILWATER_TOKEN")
        .env_remove("TAILWATER_PROFILE")
        .env_remove("TAILWATER_CONFIG")
        .env("XDG_CONFIG_HOME", config_home);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The token id `tailwater status --json` reports: which token was used.
fn token_id(output: &Output) -> String {
    assert!(output.status.success(), "{}", stderr(output));
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    status["token_id"].as_str().unwrap().to_owned()
}

#[test]
fn login_writes_a_private_profile_and_flags_beat_environment_beat_profile() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("tailwater").join("config.toml");
    let owner = stdout(
        &server
            .command(&["token", "create", "--scope", "owner"])
            .output()
            .unwrap(),
    )
    .trim()
    .to_owned();
    let admin_id = token_id(&server.command(&["status", "--json"]).output().unwrap());
    let owner_id = token_id(
        &server
            .command(&["status", "--json", "--token", &owner])
            .output()
            .unwrap(),
    );
    assert_ne!(admin_id, owner_id);

    // A bad token is refused and nothing is written.
    let refused = bare(
        home.path(),
        &["login", "--server", &server.url(), "--token", "tw_wrong"],
        &[],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("invalid token"),
        "{}",
        stderr(&refused)
    );
    assert!(!config.exists());

    // The token from stdin, as a script would pipe it.
    let mut login = Command::new(binary());
    login
        .args(["login", "--server", &server.url()])
        .env_remove("TAILWATER_TOKEN")
        .env_remove("TAILWATER_SERVER")
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = login.spawn().unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("{owner}\n").as_bytes(),
    )
    .unwrap();
    let saved = child.wait_with_output().unwrap();
    assert!(saved.status.success(), "{}", stderr(&saved));
    assert!(
        stderr(&saved).contains("saved profile 'default'"),
        "{}",
        stderr(&saved)
    );
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the file holds tokens");
    let dir_mode = std::fs::metadata(config.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    // A second profile, with the admin token.
    let admin = bare(
        home.path(),
        &[
            "login",
            "--profile",
            "ops",
            "--server",
            &server.url(),
            "--token",
            TOKEN,
        ],
        &[],
    );
    assert!(admin.status.success(), "{}", stderr(&admin));

    let status = |args: &[&str], env: &[(&str, &str)]| {
        bare(home.path(), &[&["status", "--json"], args].concat(), env)
    };
    // The profile alone; the default profile is the first one saved.
    assert_eq!(token_id(&status(&[], &[])), owner_id);
    assert_eq!(token_id(&status(&["--profile", "ops"], &[])), admin_id);
    assert_eq!(
        token_id(&status(&[], &[("TAILWATER_PROFILE", "ops")])),
        admin_id
    );
    // The environment beats the profile; a flag beats the environment.
    assert_eq!(
        token_id(&status(&[], &[("TAILWATER_TOKEN", TOKEN)])),
        admin_id
    );
    assert_eq!(
        token_id(&status(
            &["--token", &owner],
            &[("TAILWATER_TOKEN", "tw_wrong")]
        )),
        owner_id
    );
    let wrong = status(&[], &[("TAILWATER_TOKEN", "tw_wrong")]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("invalid token"),
        "{}",
        stderr(&wrong)
    );
    assert!(
        stderr(&wrong).contains("hint: the token is from --token or TAILWATER_TOKEN"),
        "{}",
        stderr(&wrong)
    );
    // A profile's token is never sent to another server.
    let elsewhere = status(&["--server", "http://127.0.0.1:1"], &[]);
    assert!(!elsewhere.status.success());
    assert!(
        stderr(&elsewhere).contains("no token for http://127.0.0.1:1"),
        "{}",
        stderr(&elsewhere)
    );
    // A named profile that does not exist is an error, not the default.
    let missing = status(&["--profile", "staging"], &[]);
    assert!(
        stderr(&missing).contains("no profile 'staging'")
            && stderr(&missing).contains("tailwater login --profile staging"),
        "{}",
        stderr(&missing)
    );

    // A file others may read still works, with a warning that says the fix.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exposed = status(&[], &[]);
    assert_eq!(token_id(&exposed), owner_id);
    assert!(
        stderr(&exposed).contains("others may read it (mode 644): run `chmod 600"),
        "{}",
        stderr(&exposed)
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A revoked token in a profile: the hint names the profile to fix.
    let revoke = server
        .command(&["token", "revoke", &owner_id])
        .output()
        .unwrap();
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    let revoked = bare(home.path(), &["logs"], &[]);
    assert!(!revoked.status.success());
    assert!(stderr(&revoked).contains("revoked"), "{}", stderr(&revoked));
    assert!(
        stderr(&revoked).contains("tailwater login --profile default"),
        "{}",
        stderr(&revoked)
    );
}

/// On a terminal, `login` asks for the token and does not echo it.
#[test]
fn login_on_a_terminal_asks_for_the_token_without_echo() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary());
    command
        .args(["login", "--server", &server.url()])
        .env_remove("TAILWATER_TOKEN")
        .env("XDG_CONFIG_HOME", home.path());
    let mut terminal = Pty::spawn(command);
    terminal.wait_for_output("token: ", Duration::from_secs(10));
    terminal.type_text(&format!("{TOKEN}\n"));
    assert!(terminal.wait(Duration::from_secs(20)).success());
    let output = terminal.wait_for_output("saved profile 'default'", Duration::from_secs(5));
    assert!(!output.contains(TOKEN), "the token was echoed: {output:?}");
    let saved = std::fs::read_to_string(home.path().join("tailwater/config.toml")).unwrap();
    assert!(saved.contains(TOKEN), "{saved}");
}

#[test]
fn status_shows_the_version_the_token_and_the_store_size() {
    let server = TestServer::start();
    assert!(run_worker(&server, "sized", "echo one; echo two")
        .status
        .success());
    let output = server.command(&["status", "--json"]).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["tenant"], "default");
    assert_eq!(status["scope"], "admin");
    let app = status["store"]["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|app| app["app"] == "sized")
        .expect("the app is counted");
    assert!(
        app["records"].as_u64().unwrap() >= 4,
        "start, two lines, exit: {app}"
    );
    assert!(status["store"]["records"].as_u64() >= app["records"].as_u64());

    let text = stdout(&server.command(&["status"]).output().unwrap());
    assert!(
        text.contains(&format!(
            "{} (tailwater {})",
            server.url(),
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("admin scope, tenant default"), "{text}");
    assert!(text.contains("sized"), "{text}");

    // An ingest token sees the server, not the store.
    let ingest = stdout(
        &server
            .command(&["token", "create", "--scope", "ingest", "--app", "sized"])
            .output()
            .unwrap(),
    )
    .trim()
    .to_owned();
    let text = stdout(
        &server
            .command(&["status", "--token", &ingest])
            .output()
            .unwrap(),
    );
    assert!(text.contains("ingest scope"), "{text}");
    assert!(text.contains("owner and admin tokens only"), "{text}");

    // A scope that may not read logs: what it can do, and where to look.
    let refused = server
        .command(&["logs", "--token", &ingest])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("a ingest token cannot read logs")
            || stderr(&refused).contains("an ingest token cannot read logs"),
        "{}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("hint: `tailwater status`"),
        "{}",
        stderr(&refused)
    );

    let unreachable = server
        .command(&["status", "--server", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    // What the system said in a few words, not the whole error chain.
    assert_eq!(
        stderr(&unreachable),
        "tailwater: error: cannot reach the tailwater server at http://127.0.0.1:1 (connection refused): is it running? (set --server or TAILWATER_SERVER)\n",
    );
}

#[test]
fn completions_generate_for_bash_zsh_and_fish() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let output = bare(home.path(), &["completions", shell], &[]);
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        let script = stdout(&output);
        for word in ["tailwater", "logs", "dev", "follow", "profile", "no-color"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    // The bash script is valid bash.
    let script = home.path().join("tailwater.bash");
    std::fs::write(
        &script,
        bare(home.path(), &["completions", "bash"], &[]).stdout,
    )
    .unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));

    let unknown = bare(home.path(), &["completions", "powershell"], &[]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("[possible values: bash, zsh, fish]"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn every_command_has_help_with_examples() {
    let home = tempfile::tempdir().unwrap();
    let top = stdout(&bare(home.path(), &["--help"], &[]));
    assert!(top.contains("Start here:"), "{top}");
    for command in [
        "server",
        "run",
        "logs",
        "dev",
        "status",
        "login",
        "completions",
        "tenant",
        "token",
        "app",
        "drain",
        "demo",
        "cluster",
        "agent",
    ] {
        let output = bare(home.path(), &[command, "--help"], &[]);
        assert!(output.status.success(), "{command}: {}", stderr(&output));
        let help = stdout(&output);
        assert!(
            help.contains("Examples:\n  tailwater "),
            "`tailwater {command} --help` shows no examples:\n{help}"
        );
    }
}

/// `tailwater status | head -1` and the like: a command that prints an
/// answer ends quietly (by SIGPIPE, as Unix tools do) when its reader is
/// gone, instead of panicking or saying it succeeded.
#[test]
fn printing_commands_end_quietly_when_their_reader_is_gone() {
    use std::os::unix::process::ExitStatusExt;
    let server = TestServer::start();
    let (status, answer) = http(
        "POST",
        server.port,
        "/v1/ingest",
        Some(TOKEN),
        Some(&ingest_batch("piped", "r1", 0..2000)),
    );
    assert_eq!(status, 200, "{answer}");
    for args in [
        &["status", "--json"][..],
        &["token", "list"],
        &["runners", "ls", "--json"],
        &["export", "-o", "-"],
    ] {
        let mut child = server
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the first write.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = stderr(&output);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("exported"),
            "{args:?} claims success: {stderr}"
        );
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?} {stderr}",
            output.status
        );
    }
}

/// Every duration flag takes the one syntax (`30s`, `2m`; `0` alone needs
/// no unit), and says so when given a bare number.
#[test]
fn every_duration_flag_takes_the_same_syntax() {
    let home = tempfile::tempdir().unwrap();
    for flag in ["--drain-timeout", "--stop-timeout", "--send-timeout"] {
        let output = bare(home.path(), &["run", flag, "3", "--", "true"], &[]);
        assert_eq!(output.status.code(), Some(2), "{flag}: {output:?}");
        assert!(
            stderr(&output).contains("write a number and a unit, such as 90s"),
            "{flag}: {}",
            stderr(&output)
        );
    }
    // (`--drain-timeout 0` in a real run: e2e/spool.rs.)
}
