//! Transparency over TCP: stock programs moving data over loopback TCP behave the same with and
//! without the library (TCP is never accelerated in this milestone: pure pass-through).

mod common;

use common::*;

/// nc -l receives a 4 MiB file sent by nc -N.
#[test]
fn nc_tcp_file_transfer() {
    let nc = which("nc");
    let data = random_bytes(4 << 20, 1);
    let t = run_twice("nc_tcp", |cx| {
        let input = cx.write_file("in.bin", &data);
        let port = free_port();
        let mut cmd = cx.command(&nc);
        cmd.args(["-d", "-l", "127.0.0.1", &port.to_string()]);
        let mut server = cx.spawn(cmd, "server", None);
        wait_tcp_listen(port, &mut server);
        let mut cmd = cx.command(&nc);
        cmd.args(["-N", "127.0.0.1", &port.to_string()]);
        cx.run(cmd, "client", Some(&input)).assert_success();
        let st = server.wait_timeout(CHILD_TIMEOUT);
        assert!(st.success(), "nc server: {st}\n{}", server.stderr_text());
        server.stdout_bytes()
    });
    assert_same_bytes("plain nc transfer", &t.plain, &data);
    assert_same_bytes("preloaded nc transfer", &t.preload, &data);
    t.logs.assert_loaded_into(&nc, 2);
}

/// socat -u TCP-LISTEN → STDOUT receives a 4 MiB file from socat -u STDIN → TCP.
#[test]
fn socat_tcp_file_transfer() {
    let socat = which("socat");
    let data = random_bytes(4 << 20, 2);
    let t = run_twice("socat_tcp", |cx| {
        let input = cx.write_file("in.bin", &data);
        let port = free_port();
        let mut cmd = cx.command(&socat);
        cmd.args([
            "-u",
            &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"),
            "STDOUT",
        ]);
        let mut server = cx.spawn(cmd, "server", None);
        wait_tcp_listen(port, &mut server);
        let mut cmd = cx.command(&socat);
        cmd.args(["-u", "STDIN", &format!("TCP:127.0.0.1:{port}")]);
        cx.run(cmd, "client", Some(&input)).assert_success();
        let st = server.wait_timeout(CHILD_TIMEOUT);
        assert!(st.success(), "socat server: {st}\n{}", server.stderr_text());
        server.stdout_bytes()
    });
    assert_same_bytes("plain socat transfer", &t.plain, &data);
    assert_same_bytes("preloaded socat transfer", &t.preload, &data);
    t.logs.assert_loaded_into(&which("socat"), 2);
}


/// iperf 2 TCP: the client sends exactly 10 MiB (-n), the one-shot server (-P 1) reports it.
#[test]
fn iperf2_tcp() {
    let iperf = which("iperf");
    const BYTES: u64 = 10 << 20;
    let t = run_twice("iperf2_tcp", |cx| {
        let port = free_port().to_string();
        let mut cmd = cx.command(&iperf);
        cmd.args(["-s", "-B", "127.0.0.1", "-p", &port, "-y", "C", "-P", "1"]);
        let mut server = cx.spawn(cmd, "server", None);
        wait_tcp_listen(port.parse().unwrap(), &mut server);
        let mut cmd = cx.command(&iperf);
        cmd.args(["-c", "127.0.0.1", "-p", &port, "-n", "10M", "-y", "C"]);
        let client = cx.run(cmd, "client", None);
        client.assert_success();
        let st = server.wait_timeout(CHILD_TIMEOUT);
        assert!(st.success(), "iperf server: {st}\n{}", server.stderr_text());
        let c = iperf_csv(&client.stdout_text());
        let s = iperf_csv(&server.stdout_text());
        assert!(
            !c.is_empty() && !s.is_empty(),
            "no CSV report\nclient:\n{}\nserver:\n{}",
            client.stdout_text(),
            server.stdout_text()
        );
        let sent: u64 = c[0][7].parse().expect("client bytes");
        let received: u64 = s.last().unwrap()[7].parse().expect("server bytes");
        (sent, received)
    });
    assert_eq!(t.plain, (BYTES, BYTES), "plain iperf (sent, received)");
    assert_eq!(
        t.preload,
        (BYTES, BYTES),
        "preloaded iperf (sent, received)"
    );
    t.logs.assert_loaded_into(&iperf, 2);
}

/// Parses iperf3 --json output (stdout of the client).
fn iperf3_json(out: &Output) -> Json {
    Json::parse(&out.stdout_text()).unwrap_or_else(|e| {
        panic!(
            "iperf3 --json output does not parse ({e}):\n{}",
            out.stdout_text()
        )
    })
}

/// iperf3 TCP: 20 MiB (-n) to a one-off server. The receiver's count is not compared with the
/// sender's: iperf3 3.12 ends the test while data is still queued on loopback, so even without
/// the library end.sum_received.bytes is often below 20 MiB.
#[test]
fn iperf3_tcp() {
    let iperf3 = which("iperf3");
    const BYTES: f64 = (20 << 20) as f64;
    let t = run_twice("iperf3_tcp", |cx| {
        let port = free_port().to_string();
        let mut cmd = cx.command(&iperf3);
        cmd.args(["-s", "-1", "-B", "127.0.0.1", "-p", &port]);
        let mut server = cx.spawn(cmd, "server", None);
        wait_tcp_listen(port.parse().unwrap(), &mut server);
        let mut cmd = cx.command(&iperf3);
        cmd.args(["-c", "127.0.0.1", "-p", &port, "-n", "20M", "--json"]);
        let client = cx.run(cmd, "client", None);
        client.assert_success();
        server.wait_timeout(CHILD_TIMEOUT);
        let j = iperf3_json(&client);
        let sent = j.num("end.sum_sent.bytes").expect("end.sum_sent.bytes");
        let received = j
            .num("end.sum_received.bytes")
            .expect("end.sum_received.bytes");
        assert_eq!(sent, BYTES, "bytes sent");
        assert!(
            received > 0.0 && received <= sent,
            "received {received} of {sent}"
        );
        sent
    });
    assert_eq!(t.plain, t.preload);
    t.logs.assert_loaded_into(&iperf3, 2);
}

/// curl fetches a 1 MiB file from python3's http.server.
#[test]
fn curl_from_python_http_server() {
    let curl = which("curl");
    let py = python3();
    let data = random_bytes(1 << 20, 3);
    let t = run_twice("curl_http", |cx| {
        let www = cx.path("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("file.bin"), &data).unwrap();
        let port = free_port().to_string();
        let mut cmd = cx.command(&py);
        cmd.args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port,
            "--directory",
        ])
        .arg(&www);
        let mut server = cx.spawn(cmd, "server", None);
        wait_tcp_listen(port.parse().unwrap(), &mut server);
        let mut cmd = cx.command(&curl);
        cmd.args([
            "-sS",
            "--fail",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            &format!("http://127.0.0.1:{port}/file.bin"),
        ]);
        let out = cx.run(cmd, "client", None);
        out.assert_success();
        server.stop();
        out.stdout
    });
    assert_same_bytes("plain curl", &t.plain, &data);
    assert_same_bytes("preloaded curl", &t.preload, &data);
    t.logs.assert_loaded_into(&curl, 1);
    t.logs.assert_loaded_into(&py, 1);
}
