mod cli;
mod lambda;

use std::process::ExitCode;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("consolidation-updater: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Lambda sets this for custom runtimes; anywhere else we are a CLI.
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        runtime.block_on(lambda::main())
    } else {
        runtime.block_on(cli::main())
    }
}
