//! `sealcred`: seal storage credentials into git-safe SealedStorageCred resources.

mod cli;
mod commands;
mod error;
mod input;
mod invocation;
mod io;
mod keys;
mod logging;
mod profile;
mod rules;
mod selector;

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = invocation::parse();
    tracing_subscriber::fmt()
        .with_env_filter(logging::filter(&cli.log_level))
        .with_writer(std::io::stderr)
        .init();
    // `diff` exits as `kubectl diff` does: 0 same, 1 different, 2 error.
    let error_code = if matches!(cli.command, Command::Diff { .. }) {
        2
    } else {
        1
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(h) = e.hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(error_code)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))?;
    if let Command::Diff {
        file,
        context,
        keys,
    } = &cli.command
    {
        let same = rt.block_on(commands::diff(file, context.as_deref(), keys))?;
        return Ok(if same {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    match cli.command {
        Command::Diff { .. } => unreachable!("handled above"),
        Command::Seal(args) => rt.block_on(commands::seal(*args)),
        Command::Inspect {
            file,
            format,
            textconv,
        } => commands::inspect(&file, format, textconv),
        Command::Unseal { file, keys, output } => rt.block_on(commands::unseal(
            &file,
            &keys,
            output.format,
            output.output_file.as_deref(),
        )),
        Command::Verify {
            files,
            recursive,
            concurrency,
            only_key,
            keys,
        } => rt.block_on(commands::verify(
            &files,
            recursive,
            concurrency,
            &only_key,
            &keys,
        )),
        Command::Check { paths } => commands::check(&paths),
        Command::Edit { file, keys } => rt.block_on(commands::edit(&file, &keys)),
        Command::Rotate(args) => rt.block_on(commands::rotate(&args)),
        Command::Pubkey(args) => rt.block_on(commands::pubkey(&args)),
        Command::RotateAccessKey(args) => rt.block_on(commands::rotate_access_key(&args)),
        Command::Keygen { output_file } => commands::keygen(output_file.as_deref()),
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "sealcred",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|e| CliError::new(format!("cannot render the man page: {e}")))?;
            io::write_output(None, &out)
        }
    }
    .map(|()| ExitCode::SUCCESS)
}
