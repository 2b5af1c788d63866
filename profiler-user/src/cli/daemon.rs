//! `flamewarden daemon`: the node agent (metrics, on-demand profiles, guard for every sandbox,
//! a web page).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::Args;

use crate::daemon::{
    self,
    config::{EXAMPLE_CONFIG, Overrides},
};

/// Arguments of `flamewarden daemon`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flamewarden daemon --config /etc/flamewarden/config.toml\n  \
    flamewarden daemon --print-default-config > config.toml\n  \
    flamewarden daemon --cleanup\n  \
    flamewarden daemon --log-format json --config /etc/flamewarden/config.toml\n\n\
    Endpoints: /metrics, /api/v1/profile, /api/v1/events, /api/v1/sandboxes, /healthz, \
    /readyz, /.\nSIGHUP reloads the configuration (a bad one is refused and the old one \
    kept); SIGTERM stops."
)]
pub struct DaemonArgs {
    /// The configuration file (TOML); defaults apply without it.
    #[arg(short, long, value_name = "FILE", env = "FLAMEWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address (overrides `listen`); non-loopback needs a bearer token.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Bearer token required by the HTTP endpoints (overrides `bearer_token`).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FLAMEWARDEN_BEARER_TOKEN",
        hide_env_values = true
    )]
    pub bearer_token: Option<String>,
    /// Cgroups with their own label in the syscall metrics (overrides `top_cgroups`).
    #[arg(long, value_name = "N")]
    pub top_cgroups: Option<usize>,
    /// Print a commented example configuration (the defaults) and exit.
    #[arg(long, conflicts_with_all = ["cleanup"])]
    pub print_default_config: bool,
    /// Validate the configuration (and its policies) and exit.
    #[arg(long)]
    pub check: bool,
    /// Detach and unpin every guard attachment the daemon made, then exit.
    #[arg(long)]
    pub cleanup: bool,
}

/// Runs `flamewarden daemon`.
pub fn run(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    if args.print_default_config {
        print!("{EXAMPLE_CONFIG}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.cleanup {
        let ids = daemon::cleanup()?;
        println!("detached and unpinned {} guard attachment(s)", ids.len());
        return Ok(ExitCode::SUCCESS);
    }
    let overrides = Overrides {
        listen: args.listen,
        bearer_token: args.bearer_token,
        top_cgroups: args.top_cgroups,
    };
    if args.check {
        let config = daemon::config::load(args.config.as_deref(), &overrides)?;
        println!(
            "configuration valid: listen {}, {} sandbox glob(s)",
            config.listen,
            config.sandboxes.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    daemon::run(args.config, overrides)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn daemon_flags_parse() {
        let cli = Cli::try_parse_from([
            "flamewarden",
            "daemon",
            "--config",
            "c.toml",
            "--listen",
            "127.0.0.1:9000",
            "--top-cgroups",
            "5",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.log_format, crate::logging::LogFormat::Json);
        let Command::Daemon(args) = cli.command else {
            panic!("not daemon");
        };
        assert_eq!(args.listen.unwrap().port(), 9000);
        assert_eq!(args.top_cgroups, Some(5));
    }
}
