//! CPU templates and custom CPU configuration (`PUT /cpu-config`).

use serde::{Deserialize, Serialize};

string_enum! {
    /// Static CPU template masking guest CPU features to match an instance
    /// type. Deprecated by Firecracker; defaults to `None`.
    #[derive(Default)]
    CpuTemplate {
        /// Intel C3.
        C3 = "C3",
        /// Intel T2.
        T2 = "T2",
        /// Intel T2S.
        T2S = "T2S",
        /// Intel/AMD T2CL.
        T2CL = "T2CL",
        /// AMD T2A.
        T2A = "T2A",
        /// ARM Neoverse V1 as N1.
        V1N1 = "V1N1",
        /// No template.
        #[default]
        None = "None",
    }
}

/// Custom CPU template: modifiers of guest CPU features, by register.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuConfig {
    /// KVM capabilities to add, or remove with a `!` prefix (e.g. `"121"`, `"!121"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm_capabilities: Option<Vec<String>>,
    /// CPUID leaf modifiers (x86_64 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuid_modifiers: Option<Vec<CpuidLeafModifier>>,
    /// Model specific register modifiers (x86_64 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msr_modifiers: Option<Vec<MsrModifier>>,
    /// Register modifiers (aarch64 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reg_modifiers: Option<Vec<ArmRegisterModifier>>,
    /// vCPU features to modify (aarch64 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_features: Option<Vec<VcpuFeatures>>,
}

/// Modifier of a CPUID leaf and subleaf (x86_64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuidLeafModifier {
    /// Leaf index as a hex, binary or decimal string (`"0x0"`, `"0b0"`, `"0"`).
    pub leaf: String,
    /// Subleaf index as a hex, binary or decimal string.
    pub subleaf: String,
    /// KVM feature flags of this leaf-subleaf.
    pub flags: u32,
    /// Register modifiers of this leaf.
    pub modifiers: Vec<CpuidRegisterModifier>,
}

string_enum! {
    /// A CPUID output register.
    CpuidRegisterModifierRegister {
        /// EAX.
        Eax = "eax",
        /// EBX.
        Ebx = "ebx",
        /// ECX.
        Ecx = "ecx",
        /// EDX.
        Edx = "edx",
    }
}

/// Modifier of one CPUID register within a leaf (x86_64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuidRegisterModifier {
    /// Target register.
    pub register: CpuidRegisterModifierRegister,
    /// `"0b"` and 32 of `0`/`1`/`x` (clear, set, keep), most significant first.
    pub bitmap: String,
}

/// Modifier of a model specific register (x86_64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MsrModifier {
    /// 32-bit MSR address as a hex, binary or decimal string.
    pub addr: String,
    /// `"0b"` and 64 of `0`/`1`/`x` (clear, set, keep); `_` allowed.
    pub bitmap: String,
}

/// Modifier of an ARM register (aarch64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmRegisterModifier {
    /// 64-bit register address as a hex, binary or decimal string.
    pub addr: String,
    /// `"0b"` and up to 128 of `0`/`1`/`x` (clear, set, keep); `_` allowed.
    pub bitmap: String,
}

/// vCPU feature modifier (aarch64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuFeatures {
    /// Index in the `kvm_vcpu_init.features` array.
    pub index: u32,
    /// `"0b"` and 32 of `0`/`1`/`x` (clear, set, keep).
    pub bitmap: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_template_values() {
        assert_eq!(CpuTemplate::default(), CpuTemplate::None);
        assert_eq!(
            serde_json::to_value(CpuTemplate::T2CL).unwrap(),
            json!("T2CL")
        );
        assert_eq!(CpuTemplate::ALL.len(), 7);
        assert_eq!(CpuTemplate::V1N1.to_string(), "V1N1");
    }

    #[test]
    fn cpuid_modifier_shape() {
        let v = json!({
            "cpuid_modifiers": [{
                "leaf": "0x1", "subleaf": "0x0", "flags": 0,
                "modifiers": [{"register": "ecx", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxx0001"}]
            }]
        });
        let c: CpuConfig = serde_json::from_value(v.clone()).unwrap();
        let m = &c.cpuid_modifiers.as_ref().unwrap()[0].modifiers[0];
        assert_eq!(m.register, CpuidRegisterModifierRegister::Ecx);
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
    }
}
