use super::*;

#[test]
fn recognises_claude_code() {
    let yes: &[(&[u8], &[&[u8]])] = &[
        (
            b"/usr/lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
            &[b"claude", b"mcp", b"serve"],
        ),
        (b"/root/.local/share/claude/versions/2.1.197", &[b"claude"]),
        (
            b"/opt/npm/node_modules/@anthropic-ai/claude-code-linux-x64/claude (deleted)",
            &[b"claude"],
        ),
        (b"/usr/local/bin/claude", &[b"claude", b"-p", b"hi"]),
        (
            b"/usr/bin/node",
            &[
                b"node",
                b"/usr/local/lib/node_modules/@anthropic-ai/claude-code/cli.js",
            ],
        ),
        (
            b"/usr/bin/node",
            &[
                b"node",
                b"--max-old-space-size=4096",
                b"/usr/local/bin/claude",
                b"-p",
            ],
        ),
    ];
    for (exe, argv) in yes {
        assert!(
            is_claude_code(exe, argv),
            "{}",
            String::from_utf8_lossy(exe)
        );
    }
    let no: &[(&[u8], &[&[u8]])] = &[
        // A wrapper whose arguments name claude is not claude.
        (
            b"/usr/bin/timeout",
            &[b"timeout", b"20", b"claude.exe", b"mcp"],
        ),
        (b"/usr/bin/bash", &[b"bash", b"-c", b"claude -p hi"]),
        (
            b"/usr/bin/node",
            &[b"node", b"/srv/app/server.js", b"claude"],
        ),
        (b"/usr/bin/claude-monitor", &[b"claude-monitor"]),
        (b"/usr/bin/node", &[b"node"]),
    ];
    for (exe, argv) in no {
        assert!(
            !is_claude_code(exe, argv),
            "{}",
            String::from_utf8_lossy(exe)
        );
    }
}

#[test]
fn container_ids_from_cgroups() {
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let cases = [
        (format!("0::/system.slice/docker-{id}.scope\n"), Some("docker")),
        (format!("12:pids:/docker/{id}\n11:cpu:/docker/{id}\n"), Some("docker")),
        (
            format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{id}.scope\n"),
            Some("containerd"),
        ),
        (format!("0::/machine.slice/libpod-{id}.scope/container\n"), Some("podman")),
        (format!("0::/kubepods/besteffort/pod12/{id}\n"), Some("kubernetes")),
        (format!("0::/lxc.payload/{id}\n"), Some("lxc.payload")),
        ("0::/user.slice/user-1000.slice/session-3.scope\n".to_string(), None),
        ("0::/\n".to_string(), None),
        (format!("0::/system.slice/docker-{id}.scope"), Some("docker")),
        (format!("12:pids:/docker/{id}\n0::/\n"), Some("docker")),
        (format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"), Some("containerd")),
        (format!("0::/crio-{id}.scope\n"), Some("cri-o")),
        // 63 or 65 hex digits are not an id.
        (format!("0::/x/{}\n", &id[1..]), None),
        (format!("0::/x/{id}a\n"), None),
    ];
    for (text, want) in cases {
        let got = container_of(&text);
        assert_eq!(got.as_ref().map(|c| c.runtime.as_str()), want, "{text}");
        if let Some(c) = got {
            assert_eq!(c.id, id);
        }
    }
}

#[test]
fn credentials_from_status() {
    let status = "Name:\tclaude\nUid:\t1000\t1000\t1000\t1001\nGid:\t100\t100\t100\t101\nGroups:\t27 100 \nCapEff:\t000001ffffffffff\n";
    assert_eq!(
        creds_of(status),
        Some(Creds {
            fsuid: 1001,
            fsgid: 101,
            groups: vec![27, 100],
            cap_eff: 0x1ff_ffff_ffff,
        })
    );
    assert_eq!(
        creds_of("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\t0\n").map(|c| c.groups),
        Some(vec![])
    );
}

#[test]
fn environment_lookup() {
    let env =
        b"HOME=/home/agent\0CLAUDE_CONFIG_DIRX=/x\0CLAUDE_CONFIG_DIR=/a\0CLAUDE_CONFIG_DIR=/b\0";
    assert_eq!(env_var(env, b"CLAUDE_CONFIG_DIR"), Some(&b"/a"[..]));
    assert_eq!(env_var(env, b"HOME"), Some(&b"/home/agent"[..]));
    assert_eq!(env_var(env, b"PATH"), None);
}

/// An agent inspected the instant it was started is judged by the environment it was started
/// with. `Command::spawn` returns once the child's `execve` has replaced its memory, which is
/// before the kernel lays out its arguments and environment: without [`settle`], 282 of these
/// 300 inspections (measured under load) read an empty environ and took the passwd home.
#[test]
fn an_agent_caught_in_its_exec_is_judged_by_its_own_environment() {
    let dir = tempfile::tempdir().unwrap();
    let claude = dir.path().join("claude");
    fs::copy("/bin/sleep", &claude).unwrap();
    let home = dir.path().join("home-of-the-test");
    let host: io::Result<Host> = Err(io::Error::other("no host needed"));
    let mut wrong = Vec::new();
    for _ in 0..300 {
        let mut child = std::process::Command::new(&claude)
            .arg("30")
            .env_clear()
            .env("HOME", &home)
            .spawn()
            .unwrap();
        let agent = inspect(child.id(), &host, false);
        child.kill().unwrap();
        child.wait().unwrap();
        let agent = agent.expect("a running `claude` is an agent");
        if agent.config_dir_from != Some(Source::Home) {
            wrong.push((agent.config_dir, agent.config_dir_from));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 300 judged without their HOME: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}

/// Only a live user process with no arguments yet is waited for: not a settled one, not a
/// zombie, not a kernel thread (all of which a scan as another user would otherwise wait on).
#[test]
fn only_a_process_in_its_exec_is_waited_for() {
    assert!(!mid_exec(std::process::id()));
    let kthreadd = fs::read_to_string("/proc/2/stat").unwrap_or_default();
    if kthreadd.contains("(kthreadd)") {
        assert!(!mid_exec(2), "{kthreadd}");
    }
    let mut zombie = std::process::Command::new("true").spawn().unwrap();
    let state = || fs::read_to_string(format!("/proc/{}/stat", zombie.id())).unwrap();
    let start = std::time::Instant::now();
    while !state().contains(") Z ") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "{}",
            state()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(fs::read(format!("/proc/{}/cmdline", zombie.id()))
        .unwrap()
        .is_empty());
    assert!(!mid_exec(zombie.id()));
    zombie.wait().unwrap();
    assert!(!mid_exec(u32::MAX));
}
