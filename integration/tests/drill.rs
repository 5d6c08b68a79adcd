//! `pgstream drill` end to end, and the local-server module it runs on (backup_core::localpg),
//! against real servers. Lean: the drill tests run on the oldest and the newest of the majors
//! under test, the localpg test on the newest only (it does not depend on the version).

mod support;

use std::time::Duration;

use backup_core::localpg::{self, InitdbOptions, LocalServer, PgBin, RunAs, StartOptions};
use integration::{server_user, ServerUser};

/// The `--os-user` the harness's server user stands for (none when not root).
fn os_user() -> Option<String> {
    match server_user() {
        ServerUser::Current => None,
        ServerUser::Switch { name, .. } => Some(name.clone()),
    }
}

#[test]
fn localpg_initdb_start_query_and_stop_leave_no_server_behind() {
    let major = support::newest_major();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scratch = integration::scratch_dir();
    let bin = PgBin::find(major, Some(&integration::pg_bin_dir(major))).unwrap();
    assert_eq!(bin.major, major);
    let run_as = RunAs::resolve(os_user().as_deref()).unwrap();
    let data = scratch.path().join("data");
    localpg::initdb(
        &bin,
        &run_as,
        &data,
        &InitdbOptions {
            superuser: "drill_su".into(),
            settings: vec![("wal_level".into(), "replica".into())],
            ..InitdbOptions::default()
        },
    )
    .unwrap();
    let mut server = LocalServer::start(StartOptions::new(
        bin.clone(),
        run_as.clone(),
        data.clone(),
        scratch.path(),
    ))
    .unwrap();
    let pid = server.pid().unwrap();
    rt.block_on(async {
        let mut conn = server
            .wait_ready("drill_su", "postgres", Duration::from_secs(60), None)
            .await
            .unwrap();
        let rows = localpg::sql::query_rows(
            &mut conn,
            "SELECT current_user, current_setting('wal_level'), current_setting('data_checksums')",
        )
        .await
        .unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Some("drill_su".to_string()),
                Some("replica".to_string()),
                Some("on".to_string())
            ]]
        );
        let err = localpg::sql::query_value(&mut conn, "SELECT * FROM no_such_table")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_table"), "{err}");
    });
    // TCP on 127.0.0.1 is refused by initdb's scram default without a password: the listener
    // is there all the same.
    std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "postgres {pid} is still running after drop"
    );
    // A second start on the same directory, and a server that exits at once (a bad setting),
    // is reported with its log.
    let mut bad = LocalServer::start(
        StartOptions::new(bin, run_as, data, scratch.path()).setting("shared_buffers", "lots"),
    )
    .unwrap();
    let err = rt
        .block_on(bad.wait_ready("drill_su", "postgres", Duration::from_secs(30), None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("exited"), "{err}");
}
