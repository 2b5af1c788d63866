//! Command-line interface: clap derive, one module per subcommand.
