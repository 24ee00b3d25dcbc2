//! `tailwater login`: checks a server and token (`GET /v1/status`), then
//! saves them as a profile of the config file (mode 600; see
//! [`crate::config`]).

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;

use crate::config::{config_path, ConfigFile, Profile, DEFAULT_SERVER};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater login --server https://logs.example.com      # asks for the token\n  tailwater login --profile local --server http://127.0.0.1:7070 --token \"$TOKEN\"\n  tailwater login --profile prod --default\n  tailwater logs --profile local --app sdxl -f\n\nThe file is $TAILWATER_CONFIG, else $XDG_CONFIG_HOME/tailwater/config.toml, else\n~/.config/tailwater/config.toml. Flags and TAILWATER_SERVER / TAILWATER_TOKEN\noverride a profile."
)]
pub struct LoginArgs {
    /// The server's URL.
    #[arg(long, env = "TAILWATER_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    server: String,
    /// The token; read from the terminal (not echoed) or from stdin when not
    /// given.
    #[arg(long, env = "TAILWATER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The profile to write [default: the file's default_profile, else
    /// "default"].
    #[arg(long, env = "TAILWATER_PROFILE", value_name = "NAME")]
    profile: Option<String>,
    /// Make it the profile used when none is named (the first profile saved
    /// always is).
    #[arg(long)]
    default: bool,
}

pub async fn run(args: LoginArgs) -> anyhow::Result<u8> {
    let path = config_path()?;
    let mut file = ConfigFile::load(&path)?;
    let name = file.profile_name(args.profile.as_deref());
    anyhow::ensure!(
        !name.trim().is_empty(),
        "--profile is empty: name the profile, or leave it out for '{}'",
        file.profile_name(None)
    );
    let token = match args.token.filter(|token| !token.is_empty()) {
        Some(token) => token,
        None => read_token()?,
    };
    let client = tailwater_client::Client::new(&args.server, &token)?;
    // Save nothing that does not work.
    let status = client.status().await?;
    file.profiles.insert(
        name.clone(),
        Profile {
            server: client.server().to_owned(),
            token: Some(token),
        },
    );
    if args.default || file.default_profile.is_none() {
        file.default_profile = Some(name.clone());
    }
    file.save(&path)?;
    eprintln!(
        "saved profile '{name}' to {}: {} (tailwater {}), tenant {}, {} token{}",
        path.display(),
        client.server(),
        status.version,
        status.tenant,
        status.scope,
        if file.default_profile.as_deref() == Some(name.as_str()) {
            " (the default profile)"
        } else {
            ""
        }
    );
    Ok(0)
}

/// One line of stdin; on a terminal, asked for and not echoed.
fn read_token() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    // Echo off before the prompt: nothing typed after it is ever shown.
    let echo = terminal.then(EchoOff::new).flatten();
    if terminal {
        eprint!("token: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    // With echo off, ECHONL still ends the prompt's line.
    drop(echo);
    let token = line.trim().to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "no token given: pass --token, set TAILWATER_TOKEN, or type it when asked"
    );
    Ok(token)
}

/// Turns the terminal's echo off until dropped.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios we own.
        unsafe {
            let mut saved = std::mem::zeroed::<libc::termios>();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            (libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) == 0)
                .then_some(EchoOff(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0) };
    }
}
