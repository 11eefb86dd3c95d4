//! Every path and method of the API, with its bodies and the path ids.

/// HTTP method of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    /// `GET`.
    Get,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
}

impl HttpMethod {
    /// The method as sent on the wire, e.g. `"PUT"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
        }
    }
}

impl std::fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When an operation is accepted, as the spec's summary states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The spec states no restriction.
    Any,
    /// "Pre-boot only": before `InstanceStart`.
    PreBoot,
    /// "Post-boot only": after `InstanceStart`.
    PostBoot,
}

/// Longest id accepted in a path.
pub const MAX_ID_LEN: usize = 64;

/// Why a concrete path could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path template has an `{id}` but no id was given.
    #[error("{operation:?} needs an id in its path")]
    MissingId {
        /// The operation.
        operation: Operation,
    },
    /// An id was given but the path template has none.
    #[error("{operation:?} takes no id in its path")]
    UnexpectedId {
        /// The operation.
        operation: Operation,
    },
    /// The id is empty.
    #[error("empty id")]
    EmptyId,
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("id of {len} bytes is longer than {MAX_ID_LEN}")]
    IdTooLong {
        /// Length of the id in bytes.
        len: usize,
    },
    /// The id has a character other than ASCII alphanumerics, `_` and `-`.
    #[error("id {id:?} has {ch:?}; only ASCII letters, digits, '_' and '-' are allowed")]
    InvalidIdChar {
        /// The id.
        id: String,
        /// The first invalid character.
        ch: char,
    },
}

/// Checks an id (drive, pmem, network interface) as Firecracker does:
/// non-empty, at most [`MAX_ID_LEN`] bytes, only `[A-Za-z0-9_-]`.
pub fn validate_id(id: &str) -> Result<(), PathError> {
    if id.is_empty() {
        return Err(PathError::EmptyId);
    }
    if id.len() > MAX_ID_LEN {
        return Err(PathError::IdTooLong { len: id.len() });
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(ch) => Err(PathError::InvalidIdChar {
            id: id.to_owned(),
            ch,
        }),
        None => Ok(()),
    }
}

struct Spec {
    method: HttpMethod,
    path: &'static str,
    operation_id: &'static str,
    request_body: Option<&'static str>,
    request_body_required: bool,
    response_body: Option<&'static str>,
    phase: Phase,
}

macro_rules! operations {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident => ($method:ident, $path:literal, $id:literal,
            $body:expr, $req:literal, $resp:expr, $phase:ident),
    )+) => {
        /// One path and method of the Firecracker API. Variants are named
        /// after the spec's `operationId`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operation {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl Operation {
            /// Every operation of the spec, in spec order.
            pub const ALL: &'static [Operation] = &[$(Operation::$variant),+];

            const fn spec(self) -> Spec {
                match self {
                    $(Operation::$variant => Spec {
                        method: HttpMethod::$method,
                        path: $path,
                        operation_id: $id,
                        request_body: $body,
                        request_body_required: $req,
                        response_body: $resp,
                        phase: Phase::$phase,
                    },)+
                }
            }
        }
    };
}

operations! {
    /// Returns general information about the instance.
    DescribeInstance => (Get, "/", "describeInstance", None, false, Some("InstanceInfo"), Any),
    /// Performs a synchronous action (start, flush metrics, Ctrl+Alt+Del).
    CreateSyncAction => (Put, "/actions", "createSyncAction", Some("InstanceActionInfo"), true, None, Any),
    /// Returns the balloon device configuration.
    DescribeBalloonConfig => (Get, "/balloon", "describeBalloonConfig", None, false, Some("Balloon"), Any),
    /// Creates or updates the balloon device; fails after boot (per its description).
    PutBalloon => (Put, "/balloon", "putBalloon", Some("Balloon"), true, None, Any),
    /// Updates the balloon target size, before or after boot.
    PatchBalloon => (Patch, "/balloon", "patchBalloon", Some("BalloonUpdate"), true, None, Any),
    /// Returns the balloon statistics, if enabled pre-boot.
    DescribeBalloonStats => (Get, "/balloon/statistics", "describeBalloonStats", None, false, Some("BalloonStats"), Any),
    /// Updates the balloon statistics polling interval, before or after boot.
    PatchBalloonStatsInterval => (Patch, "/balloon/statistics", "patchBalloonStatsInterval", Some("BalloonStatsUpdate"), true, None, Any),
    /// Starts a free page hinting run, if enabled pre-boot.
    StartBalloonHinting => (Patch, "/balloon/hinting/start", "startBalloonHinting", Some("BalloonStartCmd"), false, None, Any),
    /// Returns the free page hinting status, if enabled pre-boot.
    DescribeBalloonHinting => (Get, "/balloon/hinting/status", "describeBalloonHinting", None, false, Some("BalloonHintingStatus"), Any),
    /// Stops a free page hinting run, if enabled pre-boot.
    StopBalloonHinting => (Patch, "/balloon/hinting/stop", "stopBalloonHinting", None, false, None, Any),
    /// Creates or updates the boot source. Pre-boot only.
    PutGuestBootSource => (Put, "/boot-source", "putGuestBootSource", Some("BootSource"), true, None, PreBoot),
    /// Sets the custom CPU configuration of the vCPUs. Pre-boot only.
    PutCpuConfiguration => (Put, "/cpu-config", "putCpuConfiguration", Some("CpuConfig"), false, None, PreBoot),
    /// Creates or updates the drive `{drive_id}`. Pre-boot only.
    PutGuestDriveById => (Put, "/drives/{drive_id}", "putGuestDriveByID", Some("Drive"), true, None, PreBoot),
    /// Updates the backing file or rate limiter of drive `{drive_id}`. Post-boot only.
    PatchGuestDriveById => (Patch, "/drives/{drive_id}", "patchGuestDriveByID", Some("PartialDrive"), true, None, PostBoot),
    /// Creates or updates the pmem device `{id}`. Pre-boot only.
    PutGuestPmemById => (Put, "/pmem/{id}", "putGuestPmemByID", Some("Pmem"), true, None, PreBoot),
    /// Updates the rate limiter of pmem device `{id}`. Post-boot only.
    PatchGuestPmemById => (Patch, "/pmem/{id}", "patchGuestPmemByID", Some("PartialPmem"), true, None, PostBoot),
    /// Initializes the logger (named pipe or file).
    PutLogger => (Put, "/logger", "putLogger", Some("Logger"), true, None, Any),
    /// Returns the machine configuration (defaults before any PUT).
    GetMachineConfiguration => (Get, "/machine-config", "getMachineConfiguration", None, false, Some("MachineConfiguration"), Any),
    /// Replaces the machine configuration; omitted options reset. Pre-boot only.
    PutMachineConfiguration => (Put, "/machine-config", "putMachineConfiguration", Some("MachineConfiguration"), false, None, PreBoot),
    /// Partially updates the machine configuration. Pre-boot only.
    PatchMachineConfiguration => (Patch, "/machine-config", "patchMachineConfiguration", Some("MachineConfiguration"), false, None, PreBoot),
    /// Initializes the metrics system (named pipe or file).
    PutMetrics => (Put, "/metrics", "putMetrics", Some("Metrics"), true, None, Any),
    /// Creates the MMDS data store.
    PutMmds => (Put, "/mmds", "putMmds", Some("MmdsContentsObject"), false, None, Any),
    /// Updates the MMDS data store (JSON merge patch).
    PatchMmds => (Patch, "/mmds", "patchMmds", Some("MmdsContentsObject"), false, None, Any),
    /// Returns the MMDS data store (free-form JSON).
    GetMmds => (Get, "/mmds", "getMmds", None, false, Some("MmdsContentsObject"), Any),
    /// Sets the MMDS version, address and interfaces. Pre-boot only.
    PutMmdsConfig => (Put, "/mmds/config", "putMmdsConfig", Some("MmdsConfig"), true, None, PreBoot),
    /// Creates the entropy device. Pre-boot only.
    PutEntropyDevice => (Put, "/entropy", "putEntropyDevice", Some("EntropyDevice"), true, None, PreBoot),
    /// Configures the serial console output.
    PutSerialDevice => (Put, "/serial", "putSerialDevice", Some("SerialDevice"), true, None, Any),
    /// Configures the hotpluggable memory (virtio-mem) device.
    PutMemoryHotplug => (Put, "/hotplug/memory", "putMemoryHotplug", Some("MemoryHotplugConfig"), true, None, Any),
    /// Sets the requested size of the hotpluggable memory region.
    PatchMemoryHotplug => (Patch, "/hotplug/memory", "patchMemoryHotplug", Some("MemoryHotplugSizeUpdate"), true, None, Any),
    /// Returns the status of the hotpluggable memory.
    GetMemoryHotplug => (Get, "/hotplug/memory", "getMemoryHotplug", None, false, Some("MemoryHotplugStatus"), Any),
    /// Creates the network interface `{iface_id}`. Pre-boot only.
    PutGuestNetworkInterfaceById => (Put, "/network-interfaces/{iface_id}", "putGuestNetworkInterfaceByID", Some("NetworkInterface"), true, None, PreBoot),
    /// Updates the rate limiters of interface `{iface_id}`. Post-boot only.
    PatchGuestNetworkInterfaceById => (Patch, "/network-interfaces/{iface_id}", "patchGuestNetworkInterfaceByID", Some("PartialNetworkInterface"), true, None, PostBoot),
    /// Creates a full or diff snapshot of the paused microVM. Post-boot only.
    CreateSnapshot => (Put, "/snapshot/create", "createSnapshot", Some("SnapshotCreateParams"), true, None, PostBoot),
    /// Loads a snapshot into a fresh process (only logger and metrics set). Pre-boot only.
    LoadSnapshot => (Put, "/snapshot/load", "loadSnapshot", Some("SnapshotLoadParams"), true, None, PreBoot),
    /// Returns the Firecracker version.
    GetFirecrackerVersion => (Get, "/version", "getFirecrackerVersion", None, false, Some("FirecrackerVersion"), Any),
    /// Pauses or resumes the microVM.
    PatchVm => (Patch, "/vm", "patchVm", Some("Vm"), true, None, Any),
    /// Returns the configuration of all VM resources.
    GetExportVmConfig => (Get, "/vm/config", "getExportVmConfig", None, false, Some("FullVmConfiguration"), Any),
    /// Creates or updates the vsock device. Pre-boot only.
    PutGuestVsock => (Put, "/vsock", "putGuestVsock", Some("Vsock"), true, None, PreBoot),
}

impl Operation {
    /// HTTP method.
    pub const fn method(self) -> HttpMethod {
        self.spec().method
    }

    /// Path template, e.g. `"/drives/{drive_id}"`.
    pub const fn path_template(self) -> &'static str {
        self.spec().path
    }

    /// The spec's `operationId`, e.g. `"putGuestDriveByID"`.
    pub const fn operation_id(self) -> &'static str {
        self.spec().operation_id
    }

    /// Name of the model (= spec definition) of the request body, if any.
    pub const fn request_body(self) -> Option<&'static str> {
        self.spec().request_body
    }

    /// Whether the spec marks the request body as required.
    pub const fn request_body_required(self) -> bool {
        self.spec().request_body_required
    }

    /// Name of the model of the success (200) answer; `None` for 204 answers.
    pub const fn response_body(self) -> Option<&'static str> {
        self.spec().response_body
    }

    /// When the operation is accepted.
    pub const fn phase(self) -> Phase {
        self.spec().phase
    }

    /// Name of the id parameter of the path template (`"drive_id"`, ...), if any.
    pub fn path_param(self) -> Option<&'static str> {
        let template = self.path_template();
        let start = template.find('{')? + 1;
        let len = template.get(start..)?.find('}')?;
        template.get(start..start + len)
    }

    /// The concrete path: the template with its id filled in. `id` must be
    /// given exactly when the template has one, and must pass [`validate_id`].
    pub fn path(self, id: Option<&str>) -> Result<String, PathError> {
        let template = self.path_template();
        match (self.path_param(), id) {
            (None, None) => Ok(template.to_owned()),
            (None, Some(_)) => Err(PathError::UnexpectedId { operation: self }),
            (Some(_), None) => Err(PathError::MissingId { operation: self }),
            (Some(param), Some(id)) => {
                validate_id(id)?;
                Ok(template.replace(&format!("{{{param}}}"), id))
            }
        }
    }

    /// The operation of `method` on `path_template`, if the spec has it.
    pub fn find(method: HttpMethod, path_template: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|op| op.method() == method && op.path_template() == path_template)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let op = Operation::PutGuestDriveById;
        assert_eq!(op.method(), HttpMethod::Put);
        assert_eq!(op.path_param(), Some("drive_id"));
        assert_eq!(op.path(Some("root_fs-1")).unwrap(), "/drives/root_fs-1");
        assert_eq!(op.path(None), Err(PathError::MissingId { operation: op }));
        assert_eq!(Operation::PutLogger.path(None).unwrap(), "/logger");
        assert!(Operation::PutLogger.path(Some("x")).is_err());
        assert_eq!(
            Operation::PatchGuestPmemById.path(Some("p0")).unwrap(),
            "/pmem/p0"
        );
    }

    #[test]
    fn ids_are_validated() {
        assert_eq!(validate_id(""), Err(PathError::EmptyId));
        assert_eq!(validate_id(&"a".repeat(64)), Ok(()));
        assert_eq!(
            validate_id(&"a".repeat(65)),
            Err(PathError::IdTooLong { len: 65 })
        );
        for bad in ["../x", "a b", "é", "a/b", "a?b", "a%2F"] {
            assert!(
                matches!(validate_id(bad), Err(PathError::InvalidIdChar { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn table_is_consistent() {
        assert_eq!(Operation::ALL.len(), 38);
        for op in Operation::ALL {
            assert_eq!(Operation::find(op.method(), op.path_template()), Some(*op));
            if op.method() == HttpMethod::Get {
                assert!(op.request_body().is_none(), "{op:?}");
            }
        }
        assert_eq!(
            Operation::GetMmds.response_body(),
            Some("MmdsContentsObject")
        );
    }
}
