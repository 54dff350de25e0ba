//! Writes every target's seed inputs ([`kith_fuzz::seeds`]) to `<dir>/<target>/seed-<n>`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "seeds".into()));
    let all = kith_fuzz::seeds::seeds();
    #[cfg(feature = "node")]
    let all = [all, kith_fuzz::seeds::node_seeds()].concat();
    for (target, inputs) in all {
        let out = dir.join(target);
        std::fs::create_dir_all(&out)?;
        for (i, bytes) in inputs.iter().enumerate() {
            std::fs::write(out.join(format!("seed-{i:02}")), bytes)?;
        }
        println!("{target}: {} seeds", inputs.len());
    }
    Ok(())
}
