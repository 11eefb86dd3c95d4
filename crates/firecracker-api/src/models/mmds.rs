//! Microvm Metadata Service: configuration and contents (`/mmds`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

string_enum! {
    /// MMDS version (default `V1`).
    #[derive(Default)]
    MmdsConfigVersion {
        /// MMDS v1 (no session tokens).
        #[default]
        V1 = "V1",
        /// MMDS v2 (session tokens, like IMDSv2).
        V2 = "V2",
    }
}

/// MMDS configuration (`PUT /mmds/config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MmdsConfig {
    /// MMDS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<MmdsConfigVersion>,
    /// Ids of the network interfaces (already configured) that forward
    /// packets to the MMDS: ARP and TCP to `ipv4_address` are intercepted.
    pub network_interfaces: Vec<String>,
    /// Link-local IPv4 address of the MMDS (default `169.254.169.254`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    /// Answer `text/plain` regardless of `Accept`, like EC2 IMDS (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds_compat: Option<bool>,
}

/// The MMDS data store: free-form JSON (`/mmds` PUT, PATCH and GET).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MmdsContentsObject(pub Value);

impl Default for MmdsContentsObject {
    /// An empty JSON object.
    fn default() -> Self {
        Self(Value::Object(serde_json::Map::new()))
    }
}

impl From<Value> for MmdsContentsObject {
    fn from(value: Value) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mmds_config_shape() {
        let c = MmdsConfig {
            version: Some(MmdsConfigVersion::V2),
            network_interfaces: vec!["eth0".into()],
            ipv4_address: None,
            imds_compat: None,
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"version": "V2", "network_interfaces": ["eth0"]})
        );
    }

    #[test]
    fn contents_are_transparent() {
        let v = json!({"latest": {"meta-data": {"job": "x"}}});
        let c: MmdsContentsObject = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(c, MmdsContentsObject::from(v.clone()));
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
        assert_eq!(
            serde_json::to_string(&MmdsContentsObject::default()).unwrap(),
            "{}"
        );
    }
}
