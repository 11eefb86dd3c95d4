use super::*;

const KEY: &str = "000102030405060708090a0b0c0d0e0f";

/// A drive image: the header text, then `spec` at byte 512, padded to 4096.
fn image(extra: &str, spec: &[u8], spec_len: Option<usize>) -> Vec<u8> {
    let mut text = format!("FCXCFG1\nkey={KEY}\nproto=2\nvsock_port=1025\nheartbeat_ms=250\n");
    text.push_str(extra);
    if let Some(len) = spec_len {
        text.push_str(&format!("spec={len}\n"));
    }
    let mut img = text.into_bytes();
    img.resize(SECTOR, 0);
    img.extend_from_slice(spec);
    img.resize(img.len().div_ceil(4096) * 4096, 0);
    img
}

fn with_spec(json: &str) -> Vec<u8> {
    image("job=exit:0\n", json.as_bytes(), Some(json.len()))
}

fn spec_error(json: &str) -> String {
    match AgentConfig::parse(&with_spec(json)) {
        Ok(c) => panic!("{json} parsed: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_full_config_parses() {
    let script = "echo hi\n";
    let json = format!(
        r#"{{"command": ["/bin/sh", "-c", "echo hi"],
            "env": [["PATH", "/usr/bin:/bin"], ["K", "V=W"]],
            "working_dir": "/work", "user": "1000:1000", "root_read_only": true,
            "volumes": [{{"drive": 1, "target": "/mnt/in", "read_only": true}},
                        {{"drive": 2, "target": "/mnt/out"}}],
            "provision_scripts": [{{"name": "01-setup", "script_b64": "{}"}}],
            "cancel_grace_ms": 5000, "future_field": {{"ignored": true}},
            "network": {{"address": "10.213.0.6/30", "gateway": "10.213.0.5",
                         "dns": "10.213.0.5", "mtu": 1500}}}}"#,
        "ZWNobyBoaQo="
    );
    let config = AgentConfig::parse(&with_spec(&json)).unwrap();
    let mut key = [0u8; 16];
    key.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    assert_eq!(
        config.header,
        Header {
            key,
            proto: 2,
            vsock_port: 1025,
            heartbeat_ms: 250,
            spec_len: Some(json.len()),
        }
    );
    let spec = config.spec;
    assert_eq!(spec.command, ["/bin/sh", "-c", "echo hi"]);
    assert_eq!(
        spec.env,
        [
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("K".to_string(), "V=W".to_string())
        ]
    );
    assert_eq!(spec.working_dir.as_deref(), Some("/work"));
    assert_eq!(spec.user.as_deref(), Some("1000:1000"));
    assert!(spec.root_read_only);
    assert_eq!(
        spec.volumes,
        [
            VolumeSpec {
                drive: 1,
                target: "/mnt/in".into(),
                read_only: true
            },
            VolumeSpec {
                drive: 2,
                target: "/mnt/out".into(),
                read_only: false
            }
        ]
    );
    assert_eq!(
        spec.provision_scripts,
        [ProvisionScript {
            name: "01-setup".into(),
            script: script.as_bytes().to_vec()
        }]
    );
    assert_eq!(spec.cancel_grace_ms, Some(5000));
    let gateway = std::net::Ipv4Addr::new(10, 213, 0, 5);
    assert_eq!(
        spec.network,
        Some(NetworkSpec {
            address: Some(Ipv4Cidr {
                addr: std::net::Ipv4Addr::new(10, 213, 0, 6),
                prefix: 30
            }),
            gateway: Some(gateway),
            dns: Some(gateway),
        })
    );
}

#[test]
fn network_parts_are_each_optional_and_null_is_absent() {
    let spec = JobSpec::parse(br#"{"command": ["x"], "network": null}"#).unwrap();
    assert_eq!(spec.network, None);
    let spec = JobSpec::parse(br#"{"command": ["x"], "network": {}}"#).unwrap();
    assert_eq!(spec.network, Some(NetworkSpec::default()));
    let json = br#"{"command": ["x"], "network": {"address": null, "dns": "192.0.2.53"}}"#;
    let network = JobSpec::parse(json).unwrap().network.unwrap();
    assert_eq!(network.dns, Some(std::net::Ipv4Addr::new(192, 0, 2, 53)));
    assert_eq!((network.address, network.gateway), (None, None));
    for (address, prefix) in [("0.0.0.0/0", 0), ("10.0.0.1/32", 32), ("10.0.0.1/08", 8)] {
        let json = format!(r#"{{"command": ["x"], "network": {{"address": "{address}"}}}}"#);
        let network = JobSpec::parse(json.as_bytes()).unwrap().network.unwrap();
        assert_eq!(network.address.map(|a| a.prefix), Some(prefix), "{address}");
    }
}

#[test]
fn defaults_when_only_the_command_is_given() {
    let text = format!("FCXCFG1\nkey={}\nspec=17\n", KEY.to_uppercase());
    let mut img = text.into_bytes();
    img.resize(SECTOR, 0);
    img.extend_from_slice(br#"{"command":["x"]}"#);
    let config = AgentConfig::parse(&img).unwrap();
    assert_eq!(config.header.proto, 1);
    assert_eq!(config.header.vsock_port, DEFAULT_PORT);
    assert_eq!(config.header.heartbeat_ms, 0);
    assert_eq!(
        config.spec,
        JobSpec {
            command: vec!["x".into()],
            ..JobSpec::default()
        }
    );
    // null counts as absent.
    let spec = JobSpec::parse(br#"{"command":["x"],"env":null,"user":null}"#).unwrap();
    assert_eq!(spec.user, None);
}

#[test]
fn a_header_that_is_not_a_config_drive_is_said_so() {
    for sector in [
        &b""[..],
        b"FCXCFG",
        b"FCXCFG2\nkey=00\n",
        &[0u8; 512],
        &[0xffu8; 600],
    ] {
        assert!(matches!(Header::parse(sector), Err(ConfigError::NoMagic)));
    }
    // The magic after the NUL does not count.
    assert!(matches!(
        Header::parse(b"\0FCXCFG1\nkey=000102030405060708090a0b0c0d0e0f\n"),
        Err(ConfigError::NoMagic)
    ));
}

#[test]
fn bad_header_lines_name_the_line() {
    let cases = [
        ("FCXCFG1\n", "no key= line"),
        ("FCXCFG1\nkey=0011\n", "`key=0011`: a key is 32 hex digits"),
        (
            "FCXCFG1\nkey=zz0102030405060708090a0b0c0d0e0f\n",
            "a key is 32 hex digits",
        ),
        (
            "FCXCFG1\nkey=000102030405060708090a0b0c0d0e0f\nproto=3\n",
            "`proto=3`: this agent speaks protocol 1 or 2",
        ),
        (
            "FCXCFG1\nkey=000102030405060708090a0b0c0d0e0f\nvsock_port=-1\n",
            "`vsock_port=-1`: a port is a decimal u32",
        ),
        (
            "FCXCFG1\nkey=000102030405060708090a0b0c0d0e0f\nspec=many\n",
            "`spec=many`",
        ),
    ];
    for (text, want) in cases {
        let err = Header::parse(text.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    }
    let mut text = b"FCXCFG1\nkey=".to_vec();
    text.extend_from_slice(&[0xc3, 0x28]);
    assert!(matches!(Header::parse(&text), Err(ConfigError::NotText)));
}

#[test]
fn garbage_after_a_good_header_is_a_spec_error_with_the_key_known() {
    let mut junk = vec![0u8; 3000];
    junk.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i * 7 + 3) as u8);
    let img = image("", &junk, Some(junk.len()));
    let loaded = load(&mut std::io::Cursor::new(&img)).unwrap();
    assert_eq!(loaded.header.key[1], 1);
    let err = loaded.spec.unwrap_err();
    assert!(matches!(err, ConfigError::Json(_)), "{err}");
    assert!(err
        .to_string()
        .starts_with("the job spec is not valid JSON"));
}

#[test]
fn a_truncated_drive_or_spec_is_an_error() {
    // The spec runs past the end of the drive.
    let img = image("", b"{}", Some(9000));
    let err = load(&mut std::io::Cursor::new(&img)).unwrap().spec;
    let err = err.unwrap_err().to_string();
    assert_eq!(
        err,
        "the job spec is 9000 bytes from offset 512, past the end of the 4096-byte config drive"
    );
    // A drive cut in the middle of the sector still has its header.
    let img = image("", b"", Some(10));
    let loaded = load(&mut std::io::Cursor::new(&img[..100])).unwrap();
    assert!(matches!(
        loaded.spec,
        Err(ConfigError::SpecPastEnd { len: 10, size: 100 })
    ));
    // JSON cut short.
    let json = r#"{"command": ["/bin/true"]}"#;
    let img = image("", json.as_bytes(), Some(json.len() - 3));
    let err = AgentConfig::parse(&img).unwrap_err().to_string();
    assert!(err.contains("EOF while parsing"), "{err}");
    // A huge spec= is refused before anything is read.
    let img = image("", b"", Some(MAX_SPEC + 1));
    assert!(matches!(
        load(&mut std::io::Cursor::new(&img)).unwrap().spec,
        Err(ConfigError::SpecTooLong { .. })
    ));
    // No spec= line at all.
    let img = image("", b"", None);
    assert!(matches!(
        load(&mut std::io::Cursor::new(&img)).unwrap().spec,
        Err(ConfigError::NoSpec)
    ));
}

#[test]
fn bad_fields_are_named_with_the_value() {
    let cases = [
        ("[1,2]", r#"``: the spec is a JSON object, not an array"#),
        ("{}", "`command`: is missing"),
        (r#"{"command": []}"#, "`command`: is empty"),
        (
            r#"{"command": "ls"}"#,
            "`command`: expected an array, got \"ls\"",
        ),
        (
            r#"{"command": ["ls", 3]}"#,
            "`command[1]`: expected a string, got 3",
        ),
        (
            r#"{"command": [""]}"#,
            "`command[0]`: the program is an empty string",
        ),
        (
            r#"{"command": ["a\u0000b"]}"#,
            "`command[0]`: \"a\\u0000b\" contains a NUL byte",
        ),
        (
            r#"{"command": ["x"], "env": [["K"]]}"#,
            "`env[0]`: expected a [name, value] pair",
        ),
        (
            r#"{"command": ["x"], "env": [["A=B", "v"]]}"#,
            "`env[0]`: the name \"A=B\"",
        ),
        (
            r#"{"command": ["x"], "env": {"K": "V"}}"#,
            "`env`: expected an array",
        ),
        (
            r#"{"command": ["x"], "working_dir": "tmp"}"#,
            "`working_dir`: \"tmp\" is not an absolute path",
        ),
        (
            r#"{"command": ["x"], "user": 1000}"#,
            "`user`: expected a string, got 1000",
        ),
        (r#"{"command": ["x"], "user": ""}"#, "`user`: is empty"),
        (
            r#"{"command": ["x"], "root_read_only": "yes"}"#,
            "`root_read_only`: expected true or false, got \"yes\"",
        ),
        (
            r#"{"command": ["x"], "volumes": [{"target": "/m"}]}"#,
            "`volumes[0].drive`: is missing",
        ),
        (
            r#"{"command": ["x"], "volumes": [{"drive": 0, "target": "/m"}]}"#,
            "`volumes[0].drive`: drive 0 is the root file system",
        ),
        (
            r#"{"command": ["x"], "volumes": [{"drive": -1, "target": "/m"}]}"#,
            "`volumes[0].drive`: expected a non-negative integer, got -1",
        ),
        (
            r#"{"command": ["x"], "volumes": [{"drive": 1, "target": "/"}]}"#,
            "`volumes[0].target`: \"/\": a volume cannot be mounted over the rootfs's /",
        ),
        (
            r#"{"command": ["x"], "volumes": [{"drive": 1, "target": "/a"}, {"drive": 1, "target": "/b"}]}"#,
            "`volumes[1].drive`: drive 1 is already volumes[0]",
        ),
        (
            r#"{"command": ["x"], "volumes": [{"drive": 1, "target": "/a", "read_only": 1}]}"#,
            "`volumes[0].read_only`: expected true or false",
        ),
        (
            r#"{"command": ["x"], "provision_scripts": [{"name": "../x", "script_b64": ""}]}"#,
            "`provision_scripts[0].name`: \"../x\" is not a script name",
        ),
        (
            r#"{"command": ["x"], "provision_scripts": [{"name": "a", "script_b64": "!!"}]}"#,
            "`provision_scripts[0].script_b64`: not standard base64",
        ),
        (
            r#"{"command": ["x"], "provision_scripts": [{"name": "a", "script_b64": ""}, {"name": "a", "script_b64": ""}]}"#,
            "`provision_scripts[1].name`: two scripts are named \"a\"",
        ),
        (
            r#"{"command": ["x"], "provision_scripts": [{"name": "a"}]}"#,
            "`provision_scripts[0].script_b64`: is missing",
        ),
        (
            r#"{"command": ["x"], "network": "10.0.0.1"}"#,
            "`network`: expected an object, got \"10.0.0.1\"",
        ),
        (
            r#"{"command": ["x"], "network": {"dns": "10.0.0.256"}}"#,
            "`network.dns`: \"10.0.0.256\" is not an IPv4 address",
        ),
        (
            r#"{"command": ["x"], "network": {"dns": "::1"}}"#,
            "`network.dns`: \"::1\" is not an IPv4 address",
        ),
        (
            r#"{"command": ["x"], "network": {"dns": 167772161}}"#,
            "`network.dns`: expected a string, got 167772161",
        ),
        (
            r#"{"command": ["x"], "network": {"gateway": "10.0.0.1/30"}}"#,
            "`network.gateway`: \"10.0.0.1/30\" is not an IPv4 address",
        ),
        (
            r#"{"command": ["x"], "network": {"address": "10.0.0.2"}}"#,
            "`network.address`: \"10.0.0.2\" is not an IPv4 address with a prefix length",
        ),
        (
            r#"{"command": ["x"], "network": {"address": "10.0.0.2/33"}}"#,
            "`network.address`: \"10.0.0.2/33\" is not an IPv4 address with a prefix",
        ),
        (
            r#"{"command": ["x"], "network": {"address": "10.0.0.2/+3"}}"#,
            "`network.address`: \"10.0.0.2/+3\" is not",
        ),
        (
            r#"{"command": ["x"], "network": {"address": "10.0.0/24"}}"#,
            "`network.address`: \"10.0.0/24\" is not",
        ),
        (
            r#"{"command": ["x"], "network": {"address": "10.0.0.2/"}}"#,
            "`network.address`: \"10.0.0.2/\" is not",
        ),
        (
            r#"{"command": ["x"], "cancel_grace_ms": 1.5}"#,
            "`cancel_grace_ms`: expected a non-negative integer, got 1.5",
        ),
    ];
    for (json, want) in cases {
        let err = spec_error(json);
        assert!(err.contains(want), "{json}\n  got:  {err}\n  want: {want}");
    }
}

#[test]
fn relative_targets_start_at_the_root_and_dot_dot_is_kept() {
    let json = br#"{"command": ["x"], "working_dir": "/a/../b",
        "volumes": [{"drive": 1, "target": "data"}, {"drive": 2, "target": "/x/../y"}]}"#;
    let spec = JobSpec::parse(json).unwrap();
    assert_eq!(spec.working_dir.as_deref(), Some("/a/../b"));
    assert_eq!(spec.volumes[0].target, "/data");
    assert_eq!(spec.volumes[1].target, "/x/../y");
    let err = JobSpec::parse(br#"{"command": ["x"], "volumes": [{"drive": 1, "target": "//"}]}"#);
    assert!(err.unwrap_err().to_string().contains("over the rootfs's /"));
}

#[test]
fn base64_decodes_the_standard_alphabet() {
    assert_eq!(base64_decode("").unwrap(), b"");
    assert_eq!(base64_decode("Zg==").unwrap(), b"f");
    assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
    assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
    assert_eq!(base64_decode("Zm9vYg").unwrap(), b"foob");
    assert_eq!(base64_decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
    for bad in ["Z", "Zm9vY", "Zg=", "Z===", "Zm9v\n", "Zm-_"] {
        assert!(base64_decode(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn find_takes_the_last_drive_with_the_magic() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.img");
    std::fs::write(&root, vec![0u8; 4096]).unwrap();
    let config = dir.path().join("config.img");
    std::fs::write(&config, with_spec(r#"{"command": ["true"]}"#)).unwrap();
    let drives = vec![root.clone(), config.clone(), root.clone()];
    let (index, loaded) = find(&drives).unwrap();
    assert_eq!(index, 1);
    assert_eq!(loaded.spec.unwrap().command, ["true"]);
    let err = find(std::slice::from_ref(&root)).unwrap_err().to_string();
    assert!(
        err.starts_with("no config drive: none of the 1 block devices"),
        "{err}"
    );
    let missing = dir.path().join("missing");
    let err = find(&[missing]).unwrap_err().to_string();
    assert!(
        err.contains("cannot read the config drive") && err.contains("missing"),
        "{err}"
    );
}
