//! The `renkei` binary: parse the command line, load the configuration, hand over to the library.

use std::process::ExitCode;

use clap::Parser as _;
use migration::MigratorTrait as _;
use renkei::cli::{AuditAction, CertificatesAction, Cli, Command, MigrateAction, TenantAction};
use renkei::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Schema => {
            print!("{}", renkei::graphql::sdl());
            return ExitCode::SUCCESS;
        }
        Command::Settings => {
            print!("{}", renkei::config::settings_markdown());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            renkei::telemetry::fatal(None, &e.to_string());
            return ExitCode::from(2);
        }
    };
    renkei::telemetry::init(&config);
    let log_config = config.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            renkei::telemetry::fatal(
                Some(&config),
                &format!("cannot start the async runtime: {e}"),
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            renkei::telemetry::fatal(Some(&log_config), &renkei::db::one_line(&format!("{e:#}")));
            if e.downcast_ref::<renkei::ops_audit::UsageError>().is_some() {
                ExitCode::from(2)
            } else if e.downcast_ref::<renkei::db::SchemaBehind>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = renkei::app::App::build(config).await?;
            app.run(renkei::app::shutdown_signal()).await;
            Ok(())
        }
        Command::Migrate { action } => {
            let db = renkei::db::connect(&config).await?;
            match action {
                MigrateAction::Up => {
                    let applied = renkei::db::migrate_up(&db).await?;
                    println!("applied {applied} migration(s)");
                }
                MigrateAction::Down { steps } => {
                    migration::Migrator::down(&db, Some(steps)).await?;
                    println!("rolled back {steps} migration(s)");
                }
                MigrateAction::Status => {
                    for m in migration::Migrator::get_migration_with_status(&db).await? {
                        println!("{:<8} {}", format!("{}", m.status()), m.name());
                    }
                }
            }
            Ok(())
        }
        Command::Tenant {
            action:
                TenantAction::Create {
                    slug,
                    name,
                    admin,
                    admin_name,
                    out,
                },
        } => {
            let ops = renkei::ops::Ops::open(config).await?;
            let out = out.unwrap_or_else(|| ops.config.data_dir.join("tenants").join(&slug));
            let path = ops
                .create_tenant(&slug, &name, &admin, &admin_name, &out)
                .await?;
            println!("created tenant {slug} with CITY_ADMIN {admin}");
            println!("credentials (shown nowhere else): {}", path.display());
            Ok(())
        }
        Command::Tenant {
            action: TenantAction::Oidc { action },
        } => {
            let ops = renkei::ops::Ops::open(config).await?;
            ops.oidc(action).await
        }
        Command::Tenant {
            action: TenantAction::PushGateway { action },
        } => {
            let ops = renkei::ops::Ops::open(config).await?;
            renkei::ops_push::run(&ops, action).await
        }
        Command::Certificates {
            action: CertificatesAction::Expiring { tenant, within },
        } => {
            let ops = renkei::ops::Ops::open_read_only(config).await?;
            let rows = ops.expiring(&tenant, within).await?;
            println!(
                "{:<24} {:<34} {:<20} not after",
                "login id", "serial", "device"
            );
            for row in &rows {
                println!(
                    "{:<24} {:<34} {:<20} {}",
                    row.login_id, row.serial, row.device, row.not_after
                );
            }
            eprintln!("{} certificate(s) to renew", rows.len());
            Ok(())
        }
        Command::Certificates {
            action: CertificatesAction::MarkExpired,
        } => {
            let ops = renkei::ops::Ops::open(config).await?;
            let n = ops.mark_expired().await?;
            println!("marked {n} certificate(s) EXPIRED");
            Ok(())
        }
        Command::Audit { action } => audit(action, config).await,
        Command::Schema | Command::Settings => Ok(()),
    }
}

async fn audit(action: AuditAction, config: Config) -> anyhow::Result<()> {
    let ops = match action {
        AuditAction::Purge { .. } => renkei::ops::Ops::open(config).await?,
        AuditAction::Export { .. } | AuditAction::Verify { .. } => {
            renkei::ops::Ops::open_read_only(config).await?
        }
    };
    match action {
        AuditAction::Export {
            tenant,
            from,
            to,
            format,
            output,
        } => {
            let count = match &output {
                Some(path) => {
                    let mut file = std::io::BufWriter::new(renkei::fsutil::create_private(path)?);
                    ops.audit_export(&tenant, from.as_deref(), to.as_deref(), format, &mut file)
                        .await?
                }
                None => {
                    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
                    ops.audit_export(&tenant, from.as_deref(), to.as_deref(), format, &mut stdout)
                        .await?
                }
            };
            eprintln!("exported {count} event(s)");
            Ok(())
        }
        AuditAction::Purge { tenant, before } => {
            let purged = ops.audit_purge(&tenant, &before).await?;
            if purged.checkpoints.is_empty() {
                println!("removed 0 event(s): none older than {before}");
            } else {
                let starts: Vec<String> = purged
                    .checkpoints
                    .iter()
                    .map(|(chain, seq)| format!("the {} chain after seq {seq}", chain.name()))
                    .collect();
                println!(
                    "removed {} event(s); {tenant} now starts {} (signed checkpoints)",
                    purged.removed,
                    starts.join(" and ")
                );
            }
            Ok(())
        }
        AuditAction::Verify { tenant } => {
            let report = ops.audit_verify(&tenant).await?;
            if report.intact {
                println!("intact: {} event(s) verified", report.verified_events);
                Ok(())
            } else {
                let event = report
                    .first_broken
                    .map_or_else(|| "-".to_owned(), |id| id.to_string());
                anyhow::bail!(
                    "audit chain of {tenant} is BROKEN after {} verified event(s): first broken event {event}: {}",
                    report.verified_events,
                    report.problem.unwrap_or_default()
                )
            }
        }
    }
}
