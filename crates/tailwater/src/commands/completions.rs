//! `tailwater completions SHELL`: a completion script for bash, zsh or fish,
//! generated from the command line's own definition, so it never goes stale.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater completions bash > ~/.local/share/bash-completion/completions/tailwater\n  tailwater completions zsh > ~/.zfunc/_tailwater     # with fpath+=~/.zfunc in ~/.zshrc\n  tailwater completions fish > ~/.config/fish/completions/tailwater.fish"
)]
pub struct CompletionsArgs {
    /// bash, zsh or fish.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    shell: String,
}

pub fn run(args: CompletionsArgs) -> anyhow::Result<u8> {
    let shell: Shell = args.shell.parse().map_err(anyhow::Error::msg)?;
    let mut command = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "tailwater", &mut script);
    if let Err(error) = std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
        // `| head` is fine; anything else is worth a word.
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(error.into());
        }
    }
    Ok(0)
}
