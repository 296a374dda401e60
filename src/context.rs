//! The GPU context: a device, its queue and a cache of compiled pipelines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// A wgpu device and queue that posenc dispatches on, with a pipeline cache.
///
/// Create one with [`GpuContext::new_headless`] (tests, examples, the CLI) or wrap a device the
/// application already owns with [`GpuContext::from_device`]. Cloning is cheap (an `Arc`), and
/// the context is `Send + Sync`: several threads may record and submit work through it at once.
#[derive(Clone)]
pub struct GpuContext {
    inner: Arc<Inner>,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
}

/// Identifies one compiled pipeline: shader, entry point and override constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub shader: &'static str,
    pub entry_point: &'static str,
    /// Override constants as `(name, f64 bits)`, so the key is hashable.
    pub constants: Vec<(&'static str, u64)>,
    /// Storage types of the kernel's tensors, in binding order (a different source each).
    pub dtypes: Vec<crate::tensor::DType>,
}

/// Adapter and limits requested for a headless context.
#[derive(Clone, Debug, Default)]
pub struct AdapterRequest {
    /// Backends to search; `None` honours `WGPU_BACKEND` and defaults to all.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring of the adapter name; `None` honours `WGPU_ADAPTER_NAME`.
    pub name: Option<String>,
    /// Limits to request instead of the adapter's own (used to test splitting work at low
    /// limits); `None` requests everything the adapter offers.
    pub limits: Option<wgpu::Limits>,
}

impl GpuContext {
    /// Creates a headless device on the default adapter, honouring wgpu's environment
    /// variables `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`.
    ///
    /// The device gets the adapter's full limits, and `SHADER_F16` and `TIMESTAMP_QUERY`
    /// where the adapter has them.
    ///
    /// # Errors
    /// [`Error::NoAdapter`] when no adapter matches, [`Error::Gpu`] when the device request
    /// fails.
    pub fn new_headless() -> Result<Self> {
        pollster::block_on(Self::new_headless_async(&AdapterRequest::default()))
    }

    /// Like [`GpuContext::new_headless`], for a chosen adapter and limits.
    ///
    /// # Errors
    /// As for [`GpuContext::new_headless`].
    pub fn with_request(request: &AdapterRequest) -> Result<Self> {
        pollster::block_on(Self::new_headless_async(request))
    }

    /// Creates a headless device asynchronously; see [`GpuContext::new_headless`].
    ///
    /// # Errors
    /// As for [`GpuContext::new_headless`].
    pub async fn new_headless_async(request: &AdapterRequest) -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if let Some(backends) = request.backends {
            desc.backends = backends;
        }
        let instance = wgpu::Instance::new(desc);
        let adapter = select_adapter(&instance, request).await?;
        let info = adapter.get_info();
        log::info!(
            "using adapter {:?} ({:?}, {:?}, driver {:?})",
            info.name,
            info.backend,
            info.device_type,
            info.driver
        );

        let requested = wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY;
        let required_features = adapter.features() & requested;
        let required_limits = request.limits.clone().unwrap_or_else(|| adapter.limits());
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("posenc"),
                required_features,
                required_limits,
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu {
                during: "request_device",
                message: e.to_string(),
            })?;

        // Errors inside posenc's own operations are caught by error scopes; anything else
        // reaching the device is logged instead of wgpu's default panic.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            log::error!("uncaptured wgpu error: {e}");
        }));
        device.set_device_lost_callback(|reason, message| {
            log::error!("wgpu device lost ({reason:?}): {message}");
        });
        Ok(Self::from_device(device, queue))
    }

    /// Wraps a device and queue that the application owns.
    ///
    /// posenc records into the application's encoders and buffers; it never changes the
    /// device's error handlers.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        Self {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                pipelines: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Returns the wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// Returns the wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// Information about the adapter behind the device: name, backend, device type, driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// Describes the adapter in one line, such as `llvmpipe (LLVM 15.0.6, 256 bits) [Vulkan, Cpu]`.
    pub fn describe(&self) -> String {
        let info = &self.inner.info;
        format!("{} [{:?}, {:?}]", info.name, info.backend, info.device_type)
    }

    /// Reports whether the device was created with `SHADER_F16`.
    pub fn supports_f16(&self) -> bool {
        self.inner
            .device
            .features()
            .contains(wgpu::Features::SHADER_F16)
    }

    /// Number of distinct pipelines compiled so far (a repeated call compiles none).
    pub fn pipeline_count(&self) -> usize {
        self.lock_pipelines().len()
    }

    fn lock_pipelines(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<PipelineKey, wgpu::ComputePipeline>> {
        // A panic while holding the lock cannot leave the map half-updated (insert is the
        // only mutation), so a poisoned lock is safe to keep using.
        self.inner
            .pipelines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns the cached pipeline for `key`, compiling the source from `source()` on first use.
    pub(crate) fn pipeline(
        &self,
        key: &PipelineKey,
        source: impl FnOnce() -> String,
    ) -> Result<wgpu::ComputePipeline> {
        if let Some(pipeline) = self.lock_pipelines().get(key) {
            return Ok(pipeline.clone());
        }

        log::debug!(
            "compiling pipeline {}::{} {:?}",
            key.shader,
            key.entry_point,
            key.constants
        );
        let device = &self.inner.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key.shader),
            source: wgpu::ShaderSource::Wgsl(source().into()),
        });
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|&(name, bits)| (name, f64::from_bits(bits)))
            .collect();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.entry_point),
            layout: None,
            module: &module,
            entry_point: Some(key.entry_point),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu {
                during: "pipeline creation",
                message: error.to_string(),
            });
        }

        self.lock_pipelines().insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .finish()
    }
}

async fn select_adapter(
    instance: &wgpu::Instance,
    request: &AdapterRequest,
) -> Result<wgpu::Adapter> {
    let requested_name = request
        .name
        .clone()
        .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
        .map(|name| name.to_lowercase());

    if let Some(requested) = requested_name {
        let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&requested))
            .ok_or_else(|| {
                Error::NoAdapter(format!(
                    "no adapter name contains {requested:?} (found {names:?}); unset WGPU_ADAPTER_NAME or pick one of those"
                ))
            });
    }

    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::from_env().unwrap_or_default(),
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        })
        .await
        .map_err(|e| {
            Error::NoAdapter(format!(
                "{e}; install a Vulkan driver (on Debian: apt-get install mesa-vulkan-drivers libvulkan1) or set WGPU_BACKEND=gl"
            ))
        })
}
