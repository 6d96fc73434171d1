//! The three-host config set in examples/deploy parses, and its files differ only in node.id
//! (members whose other settings differ refuse each other).

use raftline::config::Config;

#[test]
fn the_deploy_configs_parse_and_differ_only_in_the_node_id() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy");
    let configs: Vec<Config> = (0..3)
        .map(|i| {
            let path = dir.join(format!("node-{i}.toml"));
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect();
    for (i, c) in configs.iter().enumerate() {
        assert_eq!(c.node.id, i as u32);
        assert_eq!(c.cluster.members.len(), 3);
        let mut same = c.clone();
        same.node.id = 0;
        assert_eq!(
            same, configs[0],
            "node-{i}.toml differs from node-0.toml beyond node.id"
        );
    }
}
