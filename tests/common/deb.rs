//! The Debian package that `scripts/package-deb.sh` builds, shared by tests/deb_package.rs and
//! tests/integration_ansible.rs.

use super::*;
use std::sync::OnceLock;

/// The .deb from `scripts/package-deb.sh`, built once per test process (the script reuses a
/// package built from the same inputs, so a second caller waits for nothing). Fails, naming the
/// script's output, when it cannot be built.
pub fn package_deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let t = Instant::now();
        let out = Command::new(repo.join("scripts/package-deb.sh"))
            .current_dir(repo)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/package-deb.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "scripts/package-deb.sh failed ({}); its output is above. stdout:\n{stdout}",
            out.status
        );
        eprintln!("scripts/package-deb.sh took {:?}", t.elapsed());
        let last = stdout.lines().last().unwrap_or_default();
        let path = PathBuf::from(last);
        assert!(
            path.is_absolute() && last.ends_with(".deb") && path.is_file(),
            "the last line scripts/package-deb.sh printed is not the path of a .deb: {last:?}"
        );
        path
    })
}
