//! The number format the encoder's dense layers compute in, and which kernel runs it on this CPU.
//!
//! `f32` is the reference: parity with sentence-transformers to a cosine of 0.9999. The two
//! lower precisions trade a little of that for speed where the CPU has instructions for them:
//!
//! * `int8`: weights quantized per output channel when the model loads, activations per token
//!   on every call, products summed exactly in `i32` by AVX-512 VNNI (`vpdpbusd`, 64
//!   multiply-adds per instruction against 16 for `f32`), or on AMX tiles where the CPU has
//!   them (`tdpbusd`, 16 384 per instruction).
//! * `bf16`: weights and activations rounded to bfloat16, products summed in `f32` by AVX-512
//!   BF16 (`vdpbf16ps`, 32 multiply-adds per instruction).
//!
//! Only the dense layers change: embeddings, LayerNorm, softmax, attention and pooling stay in
//! `f32`. A CPU without the instructions a precision needs runs `f32` instead, and says so: a
//! slow emulation would defeat the point of asking for a lower precision.

use std::fmt;
use std::str::FromStr;

/// A number format for the encoder's dense layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// 32-bit floats throughout: the reference.
    #[default]
    F32,
    /// bfloat16 weights and activations, `f32` accumulation.
    Bf16,
    /// 8-bit integer weights (per output channel) and activations (per token), `i32`
    /// accumulation.
    Int8,
}

impl Precision {
    /// Every precision, in the order the help text lists them.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::Int8];

    /// The name used on the command line and in `/info`: `f32`, `bf16` or `int8`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown precision `{s}`: expected f32, bf16 or int8"))
    }
}

/// The matrix kernel a precision runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `f32` on the AVX-512F micro-kernel over weights packed at load.
    Avx512F32,
    /// `f32` on the `gemm` crate (its own AVX2/FMA, NEON or scalar kernels).
    GemmF32,
    /// `int8` on AVX-512 VNNI.
    Avx512Vnni,
    /// `int8` on AMX tiles (`tdpbusd`), with AVX-512 for the rest.
    AmxInt8,
    /// `bf16` on AVX-512 BF16.
    Avx512Bf16,
}

impl Kernel {
    /// The kernel's name in the log and in `/info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kernel::Avx512F32 => "avx512f",
            Kernel::GemmF32 => "gemm",
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::AmxInt8 => "amx-int8",
            Kernel::Avx512Bf16 => "avx512-bf16",
        }
    }

    /// The precision this kernel computes in.
    pub fn precision(self) -> Precision {
        match self {
            Kernel::Avx512F32 | Kernel::GemmF32 => Precision::F32,
            Kernel::Avx512Vnni | Kernel::AmxInt8 => Precision::Int8,
            Kernel::Avx512Bf16 => Precision::Bf16,
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The instruction sets the kernels need, as found on a CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuFeatures {
    /// AVX-512 Foundation.
    pub(crate) avx512f: bool,
    /// AVX-512 Byte and Word (the int8 kernel's byte stores).
    pub(crate) avx512bw: bool,
    /// AVX-512 Vector Length extensions (128- and 256-bit masked stores).
    pub(crate) avx512vl: bool,
    /// AVX-512 Vector Neural Network Instructions (`vpdpbusd`).
    pub(crate) avx512vnni: bool,
    /// AVX-512 BF16 (`vdpbf16ps`, `vcvtneps2bf16`).
    pub(crate) avx512bf16: bool,
    /// AMX-TILE and AMX-INT8, with the tile state granted by the OS.
    pub(crate) amx_int8: bool,
}

impl CpuFeatures {
    /// The features of the CPU this runs on.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            CpuFeatures {
                avx512f: is_x86_feature_detected!("avx512f"),
                avx512bw: is_x86_feature_detected!("avx512bw"),
                avx512vl: is_x86_feature_detected!("avx512vl"),
                avx512vnni: is_x86_feature_detected!("avx512vnni"),
                avx512bf16: is_x86_feature_detected!("avx512bf16"),
                amx_int8: super::lowp::amx_int8_ready(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        CpuFeatures::default()
    }

    /// What runs when `requested` is asked for on a CPU with these features: the kernel, and
    /// why it is not of the requested precision when it is not.
    pub(crate) fn plan(self, requested: Precision) -> (Kernel, Option<&'static str>) {
        let f32_kernel = if self.avx512f {
            Kernel::Avx512F32
        } else {
            Kernel::GemmF32
        };
        let base = self.avx512f && self.avx512bw && self.avx512vl;
        match requested {
            Precision::F32 => (f32_kernel, None),
            Precision::Int8 if base && self.avx512vnni && self.amx_int8 => (Kernel::AmxInt8, None),
            Precision::Int8 if base && self.avx512vnni => (Kernel::Avx512Vnni, None),
            Precision::Int8 => (
                f32_kernel,
                Some("int8 needs AVX-512 VNNI (with AVX-512 F, BW and VL), which this CPU lacks"),
            ),
            Precision::Bf16 if base && self.avx512bf16 => (Kernel::Avx512Bf16, None),
            Precision::Bf16 => (
                f32_kernel,
                Some("bf16 needs AVX-512 BF16 (with AVX-512 F, BW and VL), which this CPU lacks"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Precision::ALL {
            assert_eq!(p.as_str().parse::<Precision>(), Ok(p));
            assert_eq!(p.to_string().to_uppercase().parse::<Precision>(), Ok(p));
        }
        let err = "fp8".parse::<Precision>().unwrap_err();
        assert!(err.contains("f32, bf16 or int8"), "{err}");
    }

    #[test]
    fn plan_falls_back_to_f32_without_the_instructions() {
        let none = CpuFeatures::default();
        for p in Precision::ALL {
            let (kernel, why) = none.plan(p);
            assert_eq!(kernel, Kernel::GemmF32);
            assert_eq!(why.is_some(), p != Precision::F32);
        }
        let skylake = CpuFeatures {
            avx512f: true,
            avx512bw: true,
            avx512vl: true,
            ..CpuFeatures::default()
        };
        assert_eq!(skylake.plan(Precision::F32), (Kernel::Avx512F32, None));
        assert_eq!(skylake.plan(Precision::Int8).0, Kernel::Avx512F32);
        assert_eq!(skylake.plan(Precision::Bf16).0, Kernel::Avx512F32);
        let cascade = CpuFeatures {
            avx512vnni: true,
            ..skylake
        };
        assert_eq!(cascade.plan(Precision::Int8), (Kernel::Avx512Vnni, None));
        assert_eq!(cascade.plan(Precision::Bf16).0, Kernel::Avx512F32);
        let zen4 = CpuFeatures {
            avx512bf16: true,
            ..cascade
        };
        assert_eq!(zen4.plan(Precision::Bf16), (Kernel::Avx512Bf16, None));
        let sapphire = CpuFeatures {
            amx_int8: true,
            ..zen4
        };
        assert_eq!(sapphire.plan(Precision::Int8), (Kernel::AmxInt8, None));
        let amx_without_avx512 = CpuFeatures {
            amx_int8: true,
            ..CpuFeatures::default()
        };
        assert_eq!(amx_without_avx512.plan(Precision::Int8).0, Kernel::GemmF32);
        for kernel in [Kernel::AmxInt8, Kernel::Avx512Bf16, Kernel::GemmF32] {
            assert_eq!(
                sapphire.plan(kernel.precision()).0.precision(),
                kernel.precision()
            );
        }
    }
}
