//! `pgstream demo`: the main job on a throwaway local cluster, with the real commands a user
//! would run, each printed before it runs, so the demo doubles as a tutorial.
//!
//! initdb and start a cluster (data checksums, SCRAM over loopback) in a private directory, load
//! pgbench data, `pgstream init` an encrypted repository, `pgstream receive-wal` into it through a
//! slot, `pgstream base` under a pgbench write load, write a row before a target time T and rows
//! after it, `pgstream switch-wal`, wait until receive-wal has that WAL, stop the load and
//! receive-wal, `pgstream list` and `verify`, stop the source, and `pgstream drill` to T with
//! checks that the row before T is there and the rows after it are not. Then a summary.
//! Everything is stopped and the directory removed at the end (unless --keep), also after a
//! failure or a Ctrl-C.
//!
//! - [`bins`]: which server binaries, and how to get them when there are none.
//! - [`source`]: the directory's layout, the secrets, the source cluster.
//! - [`load`]: pgbench, or a SQL load generator when pgbench is absent.
//! - [`target`]: the rows around the target time, the WAL wait, the drill's check file.
//! - [`child`]: running and stopping the printed commands.
//! - [`summary`]: what the demo proved and how long each step took; logs after a failure.
//! - [`signals`]: Ctrl-C and SIGTERM.

mod bins;
mod child;
mod load;
mod signals;
mod source;
mod summary;
mod target;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use backup_core::localpg::{sql, PgBin, RunAs};
use clap::Args;

use crate::exit::{classified, Failure};
use child::{Background, Interrupted, Runner};
use load::{Generator, Running};
use source::{Layout, Source, DATABASE};
use target::SLOT;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The directory holding the PostgreSQL server binaries (postgres, pg_ctl, initdb; pgbench
    /// when there). Default: the newest PostgreSQL 13-18 found through pg_config, PATH, the
    /// Debian and RHEL layouts and scripts/install-postgres.sh's directory.
    #[arg(long, env = "PGSTREAM_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,

    /// The PostgreSQL major to use, when several are installed (default: the newest).
    #[arg(long, value_name = "N")]
    pub major: Option<u32>,

    /// The throwaway directory to make (it must not exist; its parent must). Default: a new
    /// pgstream-demo-PID directory in the system temp directory ($TMPDIR or /tmp).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Keep the directory (cluster, repository, secrets, logs, drill report) for inspection.
    /// Servers and commands are stopped all the same.
    #[arg(long)]
    pub keep: bool,

    /// pgbench scale of the data (5 is about 80 MB).
    #[arg(long, default_value_t = 5, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub scale: u32,

    /// Seconds of write load (2 pgbench clients) around the base backup.
    #[arg(long, default_value_t = 10, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub load_seconds: u32,

    /// When run as root: the unprivileged OS user the cluster and every command run as
    /// (default: postgres). PostgreSQL refuses to run as root.
    #[arg(long, value_name = "NAME")]
    pub os_user: Option<String>,
}

/// Steps, for the `[n/N]` headers.
const STEPS: u32 = 10;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let usage = |msg: String| classified(Failure::Usage, anyhow!(msg));
    let cancel = signals::install().context("installing signal handlers")?;
    let started = Instant::now();

    println!("[1/{STEPS}] Finding the PostgreSQL server binaries");
    let bin = bins::find(args.pg_bin.as_deref(), args.major).map_err(usage)?;
    bin.require(&["postgres", "pg_ctl", "initdb"])
        .map_err(|e| usage(format!("{e}. {}", bins::HOW_TO_INSTALL)))?;
    let generator = match bins::pgbench(&bin) {
        Some(p) => Generator::Pgbench(p),
        None => Generator::Sql,
    };
    println!("  {} in {}", bin.version, bin.dir.display());
    println!("  load generator: {}", generator.describe());
    let run_as = RunAs::resolve(args.os_user.as_deref()).map_err(|e| usage(e.to_string()))?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("pgstream-demo-{}", std::process::id())),
    };
    let dir = absolute(&dir)?;
    if dir.exists() {
        return Err(usage(format!(
            "{} already exists: name a new directory with --dir (the demo creates it and \
             removes it at the end)",
            dir.display()
        )));
    }
    backup_core::fsutil::create_dir_durably(&dir)
        .map_err(|e| usage(format!("--dir {}: {e}", dir.display())))?;
    let layout = Layout { dir };
    let mut demo = Demo {
        layout,
        bin,
        generator,
        runner: Runner {
            pgstream: PathBuf::new(),
            run_as,
            home: PathBuf::new(),
            cancel: cancel.clone(),
        },
        args,
        receive_wal: None,
        load: None,
        timings: Vec::new(),
        facts: Vec::new(),
    };
    // The source lives here, not inside the steps: cleanup stops the commands using it first.
    let mut src = None;
    let outcome = demo.run_steps(&mut src).await;
    if outcome.is_err() && !cancel.is_cancelled() && !demo.args.keep {
        demo.print_log_tails();
    }
    demo.cleanup(src).await;
    let total = started.elapsed();
    match outcome {
        Ok(()) => {
            demo.summary(total);
            Ok(())
        }
        Err(e) if cancel.is_cancelled() || e.chain().any(|c| c.is::<Interrupted>()) => Err(
            classified(Failure::Interrupted, e.context("pgstream demo interrupted")),
        ),
        Err(e) => Err(classified(Failure::DemoFailed, e)),
    }
}

/// The demo's state: what must be stopped at the end.
struct Demo {
    layout: Layout,
    bin: PgBin,
    generator: Generator,
    runner: Runner,
    args: DemoArgs,
    receive_wal: Option<Background>,
    load: Option<Running>,
    /// Each finished step and how long it took.
    timings: Vec<(String, Duration)>,
    /// Lines for the summary.
    facts: Vec<String>,
}

impl Demo {
    async fn run_steps(&mut self, slot: &mut Option<Source>) -> anyhow::Result<()> {
        self.prepare_dir()
            .context("step 1/10 (preparing the demo directory) failed")?;
        let step = Instant::now();
        header(2, "Creating a throwaway PostgreSQL cluster");
        let r = self.create_cluster().await;
        let src = slot.insert(self.step_done(2, "the cluster", step, r)?);

        let step = Instant::now();
        header(3, "Loading data");
        let r = self.load_data(src).await;
        self.step_done(3, "loading data", step, r)?;

        let step = Instant::now();
        header(
            4,
            "Creating an encrypted repository and checking the server",
        );
        let r = self.init_repo(src).await;
        self.step_done(4, "init and check", step, r)?;

        let step = Instant::now();
        header(
            5,
            "Streaming WAL into the repository (receive-wal, in the background)",
        );
        let r = self.start_receive_wal(src).await;
        self.step_done(5, "receive-wal start", step, r)?;

        let step = Instant::now();
        header(6, "Taking a base backup under write load");
        let r = self.base_under_load(src).await;
        self.step_done(6, "base backup under load", step, r)?;

        let step = Instant::now();
        header(
            7,
            "Marking a target time between rows, and archiving that WAL",
        );
        let r = self.mark_target(src).await;
        let target = self.step_done(7, "marking the target", step, r)?;

        let step = Instant::now();
        header(
            8,
            "Stopping the load and receive-wal; listing and verifying the repository",
        );
        let r = self.stop_and_verify().await;
        self.step_done(8, "stop, list, verify", step, r)?;

        let step = Instant::now();
        header(
            9,
            "Stopping the source cluster (the drill needs only the repository)",
        );
        let r = match slot.take() {
            Some(src) => self.stop_source(src),
            None => Ok(()),
        };
        self.step_done(9, "stopping the source", step, r)?;

        let step = Instant::now();
        header(10, &format!("Drilling a point-in-time restore to {target}"));
        let r = self.drill(&target).await;
        self.step_done(10, "drill", step, r)?;
        Ok(())
    }

    /// Records a step's time, or names the step in its error.
    fn step_done<T>(
        &mut self,
        n: u32,
        name: &str,
        started: Instant,
        result: anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match result {
            Ok(v) => {
                self.timings.push((name.to_string(), started.elapsed()));
                Ok(v)
            }
            Err(e) => Err(e.context(format!("step {n}/{STEPS} ({name}) failed"))),
        }
    }

    /// Hands the directory to the server's user and makes sure that user can use it and run
    /// pgstream (a copy in the directory when it cannot reach this executable).
    fn prepare_dir(&mut self) -> anyhow::Result<()> {
        let run_as = &self.runner.run_as;
        let dir = &self.layout.dir;
        run_as.chown(dir)?;
        println!(
            "  directory: {} (mode 0700, removed at the end unless --keep)",
            dir.display()
        );
        let exe = std::env::current_exe().context("finding the pgstream executable's path")?;
        if let RunAs::User { name, .. } = run_as {
            println!(
                "  running as root: the cluster and every command below run as the unprivileged \
                 user {name} (PostgreSQL refuses to run as root)"
            );
            if !runs_as(run_as, Path::new("test"), &["-w".as_ref(), dir.as_os_str()]) {
                anyhow::bail!(
                    "user {name} cannot write to {} (a parent directory is closed to it): choose \
                     --dir under a directory it can reach, such as /tmp",
                    dir.display()
                );
            }
            if runs_as(run_as, &exe, &["--version".as_ref()]) {
                self.runner.pgstream = exe;
            } else {
                let copy = dir.join("pgstream");
                std::fs::copy(&exe, &copy)
                    .with_context(|| format!("copying {} to {}", exe.display(), copy.display()))?;
                run_as.chown(&copy)?;
                println!(
                    "  {name} cannot run {}: using a copy, {}",
                    exe.display(),
                    copy.display()
                );
                self.runner.pgstream = copy;
            }
        } else {
            self.runner.pgstream = exe;
        }
        self.runner.home = dir.clone();
        println!("  pgstream is {}", self.runner.pgstream.display());
        run_as.prepare_dir(&self.layout.logs())?;
        run_as.prepare_dir(&self.layout.drill())?;
        Ok(())
    }

    async fn create_cluster(&mut self) -> anyhow::Result<Source> {
        let (server, password) =
            source::init_and_start(&self.layout, &self.bin, &self.runner.run_as)?;
        let port = server.port();
        // On an error the server is dropped, which stops it.
        let src = source::connect_and_prepare(server, &password, &self.layout, &self.runner.cancel)
            .await?;
        self.facts.push(format!(
            "source: PostgreSQL {} on 127.0.0.1:{port}, data checksums on, SCRAM over TCP",
            self.bin.major
        ));
        Ok(src)
    }

    async fn load_data(&mut self, src: &mut Source) -> anyhow::Result<()> {
        self.generator
            .initialize(&self.runner, &src.server, &mut src.conn, self.args.scale)
            .await?;
        let stmt = "CREATE TABLE demo_marks (id serial PRIMARY KEY, phase text NOT NULL, \
                    written_at timestamptz NOT NULL DEFAULT clock_timestamp())";
        println!("  SQL: {stmt};");
        sql::query_rows(&mut src.conn, stmt).await?;
        let size = sql::query_value(
            &mut src.conn,
            "SELECT pg_size_pretty(pg_database_size(current_database()))",
        )
        .await?
        .unwrap_or_default();
        self.facts.push(format!(
            "data: scale {} ({size} in database {DATABASE}), loaded by {}",
            self.args.scale,
            match self.generator {
                Generator::Pgbench(_) => "pgbench",
                Generator::Sql => "the SQL load generator",
            }
        ));
        Ok(())
    }

    fn repo_args(&self) -> Vec<String> {
        vec![
            "--repo".into(),
            self.layout.repo().display().to_string(),
            "--passphrase-file".into(),
            self.layout.passphrase_file().display().to_string(),
        ]
    }

    async fn pgstream(&self, args: &[&str]) -> anyhow::Result<()> {
        self.runner.run(&self.runner.pgstream(args)).await
    }

    async fn init_repo(&mut self, src: &Source) -> anyhow::Result<()> {
        let repo = self.repo_args();
        let mut init = vec!["init"];
        init.extend(repo.iter().map(String::as_str));
        self.pgstream(&init).await?;
        self.pgstream(&["check", "--source", &src.conninfo]).await
    }

    async fn start_receive_wal(&mut self, src: &mut Source) -> anyhow::Result<()> {
        let repo = self.repo_args();
        let mut args = vec!["receive-wal"];
        args.extend(repo.iter().map(String::as_str));
        args.extend(["--source", &src.conninfo, "--slot", SLOT, "--create-slot"]);
        let cmd = self.runner.pgstream(&args);
        let log = self.layout.logs().join("receive-wal.log");
        let receive_wal = self.receive_wal.insert(self.runner.spawn(&cmd, &log)?);
        target::wait_streaming(&mut src.conn, receive_wal, &self.runner.cancel).await
    }

    async fn base_under_load(&mut self, src: &Source) -> anyhow::Result<()> {
        let log = self.layout.logs().join("load.log");
        let running = self.generator.start(
            &self.runner,
            &src.server,
            self.args.scale,
            self.args.load_seconds,
            log,
        )?;
        self.load = Some(running);
        // Let the clients connect and start writing before the backup starts.
        self.pause(Duration::from_secs(1)).await?;
        let repo = self.repo_args();
        let mut args = vec!["base"];
        args.extend(repo.iter().map(String::as_str));
        args.extend([
            "--source",
            &src.conninfo,
            "--label",
            "pgstream demo",
            "--no-progress",
        ]);
        let started = Instant::now();
        self.pgstream(&args).await?;
        self.facts.push(format!(
            "base backup: {:.1} s, under a {} s write load",
            started.elapsed().as_secs_f64(),
            self.args.load_seconds
        ));
        Ok(())
    }

    /// The rows around the target time T, `switch-wal`, and a wait until receive-wal has it.
    async fn mark_target(&mut self, src: &mut Source) -> anyhow::Result<String> {
        let cancel = self.runner.cancel.clone();
        let target = target::write_rows_around_target(&mut src.conn, &cancel).await?;
        self.pgstream(&["switch-wal", "--source", &src.conninfo])
            .await?;
        let receive_wal = self
            .receive_wal
            .as_mut()
            .context("receive-wal is not running")?;
        target::wait_flushed(&mut src.conn, receive_wal, &cancel).await?;
        self.facts.push(format!(
            "target T = {target}: 1 row written before it, 3 after it, all in the archive"
        ));
        Ok(target)
    }

    async fn stop_and_verify(&mut self) -> anyhow::Result<()> {
        if let Some(load) = self.load.as_mut() {
            println!(
                "  waiting for the load to end (--load-seconds {})",
                self.args.load_seconds
            );
            let summary = load.finish(&self.runner.cancel).await?;
            println!("  {summary}");
            self.facts.push(summary);
        }
        self.load = None;
        if let Some(mut child) = self.receive_wal.take() {
            child.terminate().await?;
        }
        let repo = self.repo_args();
        for command in ["list", "verify"] {
            let mut args = vec![command];
            args.extend(repo.iter().map(String::as_str));
            self.pgstream(&args).await?;
        }
        Ok(())
    }

    fn stop_source(&mut self, src: Source) -> anyhow::Result<()> {
        let Source {
            mut server, conn, ..
        } = src;
        drop(conn);
        println!("$ pg_ctl stop -D {} -m fast", server.data_dir().display());
        tokio::task::block_in_place(|| server.stop())?;
        Ok(())
    }

    async fn drill(&mut self, target: &str) -> anyhow::Result<()> {
        let (table, rows) = self.generator.table(self.args.scale);
        let check = target::check_sql(table, rows);
        let path = self.layout.check_sql();
        source::write_private(&self.runner.run_as, &path, &check)?;
        println!("  {} asserts: 1 row 'before the target', 0 rows 'after the target', {rows} rows in {table}", path.display());
        let repo = self.repo_args();
        let mut args = vec!["drill"];
        args.extend(repo.iter().map(String::as_str));
        let check_sql = path.display().to_string();
        let scratch = self.layout.drill().display().to_string();
        let bin = self.bin.dir.display().to_string();
        let report = self.layout.report().display().to_string();
        args.extend([
            "--target-time",
            target,
            "--check-sql",
            &check_sql,
            "--check-db",
            DATABASE,
            "--scratch",
            &scratch,
            "--pg-bin",
            &bin,
            "--report",
            &report,
            "--timeout",
            "10m",
        ]);
        let started = Instant::now();
        self.pgstream(&args).await?;
        self.facts.push(format!(
            "drill: restored, replayed to T through wal-fetch, promoted and checked in {:.1} s",
            started.elapsed().as_secs_f64(),
        ));
        Ok(())
    }

    async fn pause(&self, d: Duration) -> anyhow::Result<()> {
        target::pause(d, &self.runner.cancel).await
    }

    /// Stops everything still running and removes the directory unless --keep. Never fails:
    /// problems are printed (the demo's own outcome is what the exit code reports).
    async fn cleanup(&mut self, src: Option<Source>) {
        if let Some(load) = self.load.as_mut() {
            load.stop_quietly().await;
        }
        self.load = None;
        if let Some(mut child) = self.receive_wal.take() {
            child.stop_quietly().await;
        }
        if let Some(Source {
            mut server, conn, ..
        }) = src
        {
            drop(conn);
            if let Err(e) = tokio::task::block_in_place(|| server.stop()) {
                eprintln!("pgstream demo: stopping the source cluster: {e}");
            }
        }
        let dir = &self.layout.dir;
        if self.args.keep {
            println!("\nKept {} (--keep).", dir.display());
            return;
        }
        match backup_core::fsutil::remove_dir_all_durably(dir) {
            Ok(()) => println!("\nRemoved {}.", dir.display()),
            Err(e) => eprintln!(
                "pgstream demo: removing {}: {e} (remove it yourself)",
                dir.display()
            ),
        }
    }
}

fn header(n: u32, title: &str) {
    println!("\n[{n}/{STEPS}] {title}");
}

/// Whether `program args` exits 0 when run as `run_as` (can that user reach and use a path?).
fn runs_as(run_as: &RunAs, program: &Path, args: &[&std::ffi::OsStr]) -> bool {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    run_as.apply(&mut cmd);
    cmd.status().is_ok_and(|s| s.success())
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("reading the current directory")?
        .join(p))
}
