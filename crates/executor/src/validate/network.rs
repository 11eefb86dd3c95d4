//! What network a request asks for: `ports_to_bind` (host port → guest
//! port, `protocol` tcp or udp, fcexec's extension), `gateway_ip`, and the
//! engine-spec extensions `network` and `egress`.
//!
//! Only the request's own consistency is checked here; whether the gateway
//! lies in the executor's address pool and whether a host port is free are
//! decided when the network is made, at launch.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use fcexec_network::{PortMapping, Protocol};

use super::checks::shorten;
use super::ValidationError;
use crate::request::{ExecutionRequest, PortBinding};
use crate::spec::EngineSpec;

/// The network a request asks for explicitly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkAsk {
    /// Ports to publish.
    pub ports: Vec<PortMapping>,
    /// The guest's gateway and DNS address (`gateway_ip`).
    pub gateway: Option<Ipv4Addr>,
}

/// The request's network: `Some` when it asks for one (ports, a gateway,
/// or `network: true`), `None` when it leaves it to the executor or says
/// `network: false`.
pub fn network_ask(
    request: &ExecutionRequest,
    spec: &EngineSpec,
) -> Result<Option<NetworkAsk>, ValidationError> {
    let mut ports = Vec::with_capacity(request.ports_to_bind.len());
    let mut seen = HashSet::new();
    for (index, binding) in request.ports_to_bind.iter().enumerate() {
        let mapping = port(index, binding)?;
        if !seen.insert((mapping.host, mapping.protocol)) {
            return Err(ValidationError::InvalidValue {
                field: format!("ports_to_bind[{index}].host_port"),
                value: format!("{}/{}", mapping.host, mapping.protocol),
                reason: "is published twice by this request".into(),
                fix: "publish each host port once per protocol",
            });
        }
        ports.push(mapping);
    }
    let gateway = match request.gateway_ip.trim() {
        "" => None,
        text => Some(
            text.parse::<Ipv4Addr>()
                .map_err(|_| ValidationError::InvalidValue {
                    field: "gateway_ip".into(),
                    value: shorten(text),
                    reason: "is not an IPv4 address".into(),
                    fix: "give the guest's gateway as an IPv4 address of the executor's \
                          address pool, such as 10.213.0.5, or leave it empty",
                })?,
        ),
    };
    let asked = !ports.is_empty() || gateway.is_some();
    match spec.network {
        Some(false) if asked => Err(ValidationError::InvalidValue {
            field: "engine_spec.params.network".into(),
            value: "false".into(),
            reason: "is given with ports_to_bind or gateway_ip, which need a network".into(),
            fix: "remove network: false, or the ports and gateway",
        }),
        Some(false) => Ok(None),
        Some(true) => Ok(Some(NetworkAsk { ports, gateway })),
        None => Ok(asked.then_some(NetworkAsk { ports, gateway })),
    }
}

/// One `ports_to_bind` entry as a mapping.
fn port(index: usize, binding: &PortBinding) -> Result<PortMapping, ValidationError> {
    let number = |name: &str, value: i64| {
        u16::try_from(value)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ValidationError::InvalidValue {
                field: format!("ports_to_bind[{index}].{name}"),
                value: value.to_string(),
                reason: "is not a port number".into(),
                fix: "give a port from 1 to 65535",
            })
    };
    let host = number("host_port", binding.host_port)?;
    let guest = number("executor_port", binding.executor_port)?;
    let ip = binding.ip.trim();
    if !ip.is_empty() && ip != "0.0.0.0" {
        return Err(ValidationError::NotSupported {
            field: format!("ports_to_bind[{index}].ip"),
            value: shorten(ip),
            fix: "fcexec publishes a port on every address of the host; leave ip empty or \
                  give 0.0.0.0",
        });
    }
    let protocol = match binding.protocol.trim().to_ascii_lowercase().as_str() {
        "" | "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return Err(ValidationError::InvalidValue {
                field: format!("ports_to_bind[{index}].protocol"),
                value: shorten(other),
                reason: "is not a protocol fcexec publishes".into(),
                fix: "give \"tcp\" (the default) or \"udp\"",
            })
        }
    };
    Ok(PortMapping {
        host,
        guest,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ports: &[(i64, i64, &str)], gateway: &str) -> ExecutionRequest {
        ExecutionRequest {
            ports_to_bind: ports
                .iter()
                .map(|(h, g, p)| PortBinding {
                    ip: String::new(),
                    host_port: *h,
                    executor_port: *g,
                    protocol: p.to_string(),
                })
                .collect(),
            gateway_ip: gateway.into(),
            ..ExecutionRequest::default()
        }
    }

    fn spec(network: Option<bool>) -> EngineSpec {
        let mut spec: EngineSpec = serde_json::from_value::<crate::SpecConfig>(
            serde_json::json!({"type": "firecracker", "params": {"kernel_image": "/k",
                               "root_file_system": "/r"}}),
        )
        .map(|c| EngineSpec::decode(&c))
        .expect("a spec")
        .expect("a valid spec");
        spec.network = network;
        spec
    }

    #[test]
    fn ports_and_gateway_ask_for_a_network() {
        let ask = network_ask(
            &request(&[(8080, 80, ""), (53, 53, "UDP")], "10.213.0.5"),
            &spec(None),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            ask.ports,
            [
                PortMapping {
                    host: 8080,
                    guest: 80,
                    protocol: Protocol::Tcp
                },
                PortMapping {
                    host: 53,
                    guest: 53,
                    protocol: Protocol::Udp
                },
            ]
        );
        assert_eq!(ask.gateway, Some(Ipv4Addr::new(10, 213, 0, 5)));
        assert_eq!(network_ask(&request(&[], ""), &spec(None)).unwrap(), None);
        assert_eq!(
            network_ask(&request(&[], ""), &spec(Some(true))).unwrap(),
            Some(NetworkAsk::default())
        );
        assert_eq!(
            network_ask(&request(&[], ""), &spec(Some(false))).unwrap(),
            None
        );
    }

    #[test]
    fn bad_ports_and_gateways_name_the_field() {
        let cases: &[(ExecutionRequest, Option<bool>, &str)] = &[
            (
                request(&[(0, 80, "")], ""),
                None,
                "ports_to_bind[0].host_port",
            ),
            (
                request(&[(80, 70000, "")], ""),
                None,
                "ports_to_bind[0].executor_port",
            ),
            (
                request(&[(80, 80, "sctp")], ""),
                None,
                "ports_to_bind[0].protocol",
            ),
            (
                request(&[(80, 80, ""), (80, 81, "tcp")], ""),
                None,
                "ports_to_bind[1].host_port",
            ),
            (request(&[], "gateway"), None, "gateway_ip"),
            (
                request(&[(80, 80, "")], ""),
                Some(false),
                "engine_spec.params.network",
            ),
        ];
        for (r, network, field) in cases {
            let err = network_ask(r, &spec(*network)).unwrap_err();
            assert_eq!(err.field(), *field, "{err}");
        }
        let mut r = request(&[(80, 80, "")], "");
        r.ports_to_bind[0].ip = "192.0.2.1".into();
        let err = network_ask(&r, &spec(None)).unwrap_err();
        assert_eq!(err.field(), "ports_to_bind[0].ip", "{err}");
        // The same port for tcp and udp is fine.
        assert!(network_ask(
            &request(&[(53, 53, "tcp"), (53, 53, "udp")], ""),
            &spec(None)
        )
        .is_ok());
    }
}
