//! `tailwater export`: every record a filter matches, as text or NDJSON,
//! optionally gzip-compressed, to a file or stdout, with a progress bar.
//!
//! The server streams the export (`GET /v1/export`); this writes each chunk
//! as it arrives, so memory stays small whatever the size. Compression is
//! done here, so the progress bar can count lines. A file is written under a
//! temporary name beside it and renamed only once complete: an export that
//! fails leaves no half file behind.
//!
//! An export that lacks records the server could not read (damaged blocks)
//! ends with a line saying so ([`ExportFormat::incomplete_line`]): it is
//! kept in the output, repeated as a warning on stderr, and the command
//! exits with [`EXIT_INCOMPLETE`].

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use flate2::write::GzEncoder;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tailwater_model::wire::ExportFormat;

use super::logs::FilterArgs;
use crate::render::PrecisionArg;
use crate::Connection;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater export --app sdxl --since 1d -o sdxl.log\n  tailwater export --app sdxl --format ndjson --gzip -o sdxl.ndjson.gz\n  tailwater export --request req-42 --level warn | less"
)]
pub struct ExportArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    filters: FilterArgs,
    /// text (one line per record) or ndjson (one JSON record per line, in
    /// the API's record shape).
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
    /// Digits of a second in a text export's times: ms (3), us (6) or ns
    /// (9). An ndjson export has every digit.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Ms, value_name = "UNIT")]
    time_precision: PrecisionArg,
    /// Compress the output with gzip.
    #[arg(long)]
    gzip: bool,
    /// Write to this file instead of stdout (`-`: stdout).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

/// The exit code of an export that wrote everything the server sent, but
/// the server said records are missing.
pub const EXIT_INCOMPLETE: u8 = 3;

/// The longest last line kept to check for the server's trailer (which is
/// far shorter): a longer one is a record.
const TRAILER_MAX: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Text,
    Ndjson,
}

pub async fn run(args: ExportArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    let params = args.filters.params()?;
    let format = match args.format {
        FormatArg::Text => ExportFormat::Text,
        FormatArg::Ndjson => ExportFormat::Ndjson,
    };
    let precision = (format == ExportFormat::Text).then(|| args.time_precision.into());
    let export = client.export_at(&params, format, precision).await?;
    let progress = progress_bar();
    // `-o -` is stdout, as for most tools, not a file named `-`.
    let file = args
        .output
        .as_deref()
        .filter(|path| *path != std::path::Path::new("-"));
    let mut out = Output::open(file, args.gzip)?;
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut last_line = LastLine {
        rest: Some(Vec::new()),
        ..LastLine::default()
    };
    let mut chunks = export.chunks;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.context("the export was cut off")?;
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|byte| **byte == b'\n').count() as u64;
        last_line.push(&chunk);
        out.write_all(&chunk)?;
        progress.set_position(bytes);
        progress.set_message(format!("{lines} lines"));
    }
    out.finish()?;
    progress.finish_and_clear();
    let incomplete = last_line
        .finish()
        .and_then(|line| format.parse_incomplete_line(line));
    if incomplete.is_some() {
        lines -= 1;
    }
    if let Some(path) = file {
        eprintln!(
            "tailwater: exported {lines} lines ({}) to {} (records up to id {})",
            indicatif::HumanBytes(bytes),
            path.display(),
            export.as_of
        );
    }
    if let Some(incomplete) = incomplete {
        eprintln!(
            "tailwater: warning: the export is {} (its last line says so too)",
            incomplete.message
        );
        return Ok(EXIT_INCOMPLETE);
    }
    Ok(0)
}

/// The last whole line of a body read chunk by chunk, kept only while it
/// is short enough to be the server's trailer.
#[derive(Default)]
struct LastLine {
    /// The last whole line; `None` when it was too long.
    line: Option<Vec<u8>>,
    /// What came after it; `None` once past [`TRAILER_MAX`].
    rest: Option<Vec<u8>>,
}

impl LastLine {
    fn push(&mut self, chunk: &[u8]) {
        let Some(end) = chunk.iter().rposition(|byte| *byte == b'\n') else {
            self.rest = self
                .rest
                .take()
                .filter(|rest| rest.len() + chunk.len() <= TRAILER_MAX)
                .map(|mut rest| {
                    rest.extend_from_slice(chunk);
                    rest
                });
            return;
        };
        let line = match chunk[..end].iter().rposition(|byte| *byte == b'\n') {
            Some(start) => Some(chunk[start + 1..end].to_vec()),
            None => self.rest.take().map(|mut line| {
                line.extend_from_slice(&chunk[..end]);
                line
            }),
        };
        self.line = line.filter(|line| line.len() <= TRAILER_MAX);
        self.rest = Some(chunk[end + 1..].to_vec());
    }

    /// The last line, when the body ended with a newline.
    fn finish(&self) -> Option<&[u8]> {
        match &self.rest {
            Some(rest) if rest.is_empty() => self.line.as_deref(),
            _ => None,
        }
    }
}

/// A spinner with bytes and lines on stderr, when stderr is a terminal.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let progress = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} exporting {bytes} ({binary_bytes_per_sec}), {msg}, {elapsed}",
        )
        .expect("a valid template"),
    );
    progress.enable_steady_tick(Duration::from_millis(120));
    // Shown from the start, however short the export.
    progress.set_message("0 lines");
    progress
}

/// Where the export goes: stdout or a file being written, plain or gzip.
struct Output {
    writer: Writer,
    /// The file's temporary name, and the name it takes when complete.
    names: Option<(tempfile::TempPath, PathBuf)>,
}

enum Writer {
    Plain(BufWriter<Sink>),
    Gzip(GzEncoder<BufWriter<Sink>>),
}

enum Sink {
    Stdout(std::io::StdoutLock<'static>),
    File(std::fs::File),
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(stdout) => stdout.write(bytes),
            Sink::File(file) => file.write(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(stdout) => stdout.flush(),
            Sink::File(file) => file.flush(),
        }
    }
}

impl Output {
    fn open(path: Option<&std::path::Path>, gzip: bool) -> anyhow::Result<Output> {
        let (sink, names) = match path {
            None => (Sink::Stdout(std::io::stdout().lock()), None),
            Some(path) => {
                let dir = path
                    .parent()
                    .filter(|dir| !dir.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                let temporary = tempfile::Builder::new()
                    .prefix(".tailwater-export")
                    .tempfile_in(dir)
                    .with_context(|| {
                        format!("cannot write in {}: pick another -o", dir.display())
                    })?;
                let (file, temporary) = temporary.into_parts();
                (Sink::File(file), Some((temporary, path.to_owned())))
            }
        };
        let buffered = BufWriter::with_capacity(256 * 1024, sink);
        let writer = if gzip {
            Writer::Gzip(GzEncoder::new(buffered, flate2::Compression::default()))
        } else {
            Writer::Plain(buffered)
        };
        Ok(Output { writer, names })
    }

    fn write_all(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let written = match &mut self.writer {
            Writer::Plain(writer) => writer.write_all(bytes),
            Writer::Gzip(writer) => writer.write_all(bytes),
        };
        match written {
            // A closed pipe (`| head`) is a normal way to stop reading.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
            other => other.context("cannot write the export"),
        }
    }

    /// Ends the gzip stream and flushes; a file is synced to disk, then
    /// given its name.
    fn finish(self) -> anyhow::Result<()> {
        let buffered = match self.writer {
            Writer::Plain(buffered) => buffered,
            Writer::Gzip(encoder) => encoder.finish().context("cannot write the export")?,
        };
        let sink = buffered
            .into_inner()
            .map_err(|error| error.into_error())
            .context("cannot write the export")?;
        if let (Sink::File(file), Some((temporary, path))) = (sink, self.names) {
            file.sync_all().context("cannot write the export")?;
            temporary
                .persist(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_is_found_however_the_body_is_cut_into_chunks() {
        let body = b"first record\nsecond\n# tailwater: trailer\n";
        for size in 1..body.len() {
            let mut last = LastLine {
                rest: Some(Vec::new()),
                ..LastLine::default()
            };
            for chunk in body.chunks(size) {
                last.push(chunk);
            }
            assert_eq!(last.finish(), Some(&b"# tailwater: trailer"[..]), "{size}");
        }
        let mut cut = LastLine::default();
        cut.push(b"a\nno newline at the end");
        assert_eq!(cut.finish(), None);
    }
}
