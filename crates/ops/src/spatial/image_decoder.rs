//! ImageDecoder (opset 20): decodes one encoded image (JPEG, PNG, BMP, PNM,
//! TIFF, WebP through the `image` crate; JPEG 2000 through `hayro-jpeg2000`)
//! into UINT8 `[H, W, 3]` RGB or BGR,
//! or `[H, W, 1]` grayscale with PIL's `convert("L")` weights (the ONNX
//! reference decodes with PIL). The decoder's allocations are bounded by the
//! tensor cap before any pixel is decoded.

use crate::support::{arg, known};
use crate::BuildCx;
use image::{ImageReader, Limits};
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Error, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;
use std::io::Cursor;

const NAME: &str = "ImageDecoder";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Rgb,
    Bgr,
    Gray,
}

#[derive(Debug)]
struct ImageDecoder {
    format: Format,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let format = match cx.attrs.str_or("pixel_format", "RGB")?.as_str() {
        "RGB" => Format::Rgb,
        "BGR" => Format::Bgr,
        "Grayscale" => Format::Gray,
        f => {
            return metal_mps_ir::invalid!(
                "{NAME}: pixel_format '{f}' is not RGB, BGR or Grayscale"
            )
        }
    };
    Ok(Op::Dyn(DynOp::new(ImageDecoder { format })))
}

/// PIL's ITU-R 601-2 luma in fixed point, as `Image.convert("L")` computes it.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Whether `bytes` start as a JPEG 2000 file (JP2 box) or codestream.
fn is_jpeg2000(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0, 0, 0, 12, b'j', b'P', b' ', b' ', 13, 10, 0x87, 10])
        || bytes.starts_with(&[0xff, 0x4f, 0xff, 0x51])
}

/// A JPEG 2000 image as RGB bytes and its width and height.
fn decode_jpeg2000(bytes: &[u8]) -> Result<(Vec<u8>, usize, usize)> {
    use hayro_jpeg2000::{ColorSpace, DecodeSettings, DecoderContext, Image};
    let fail = |e: &dyn std::fmt::Debug| Error::Invalid(format!("{NAME}: JPEG 2000: {e:?}"));
    let image = Image::new(bytes, &DecodeSettings::default()).map_err(|e| fail(&e))?;
    let (w, h) = (image.width() as usize, image.height() as usize);
    let gray = match image.color_space() {
        ColorSpace::Gray => true,
        ColorSpace::RGB => false,
        other => {
            return Err(Error::Unsupported(format!(
                "{NAME}: a JPEG 2000 image in the {other:?} color space"
            )))
        }
    };
    let channels = (if gray { 1 } else { 3 }) + image.has_alpha() as usize;
    let pixels = w
        .checked_mul(h)
        .and_then(|n| n.checked_mul(channels))
        .ok_or_else(|| Error::TooLarge(format!("{NAME}: a {w}x{h} image")))?;
    // The decoder keeps each component as f32 while it works.
    metal_mps_ir::limits::check_tensor_bytes(pixels.saturating_mul(4))?;
    let decoded = image
        .decode(&mut DecoderContext::default())
        .map_err(|e| fail(&e))?
        .data_u8();
    if decoded.len() != pixels {
        return Err(Error::Invalid(format!(
            "{NAME}: JPEG 2000: {} bytes decoded for a {w}x{h} image of {channels} channels",
            decoded.len()
        )));
    }
    let rgb = decoded
        .chunks_exact(channels)
        .flat_map(|p| if gray { [p[0]; 3] } else { [p[0], p[1], p[2]] })
        .collect();
    Ok((rgb, w, h))
}

impl ImageDecoder {
    fn decode(&self, bytes: &[u8]) -> Result<Tensor> {
        if is_jpeg2000(bytes) {
            let (rgb, w, h) = decode_jpeg2000(bytes)?;
            return self.arrange(rgb, w, h);
        }
        let fail = |e: &dyn std::fmt::Display| Error::Invalid(format!("{NAME}: {e}"));
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| fail(&e))?;
        if reader.format().is_none() {
            return Err(Error::Unsupported(format!(
                "{NAME}: the data is not an image in a format this engine decodes \
                 (JPEG, JPEG 2000, PNG, BMP, PNM, TIFF, WebP)"
            )));
        }
        let mut limits = Limits::default();
        limits.max_alloc = Some(metal_mps_ir::limits::max_tensor_bytes() as u64);
        reader.limits(limits);
        let rgb = reader.decode().map_err(|e| fail(&e))?.into_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        self.arrange(rgb.into_raw(), w, h)
    }

    /// The output tensor from RGB pixels, rearranged in their own buffer.
    fn arrange(&self, mut pixels: Vec<u8>, w: usize, h: usize) -> Result<Tensor> {
        match self.format {
            Format::Rgb => {}
            Format::Bgr => pixels.chunks_exact_mut(3).for_each(|p| p.swap(0, 2)),
            Format::Gray => {
                // Pixel i's luma goes to byte i, never ahead of pixel i's own bytes.
                for i in 0..w * h {
                    pixels[i] = luma(pixels[3 * i], pixels[3 * i + 1], pixels[3 * i + 2]);
                }
                pixels.truncate(w * h);
            }
        }
        Tensor::from_vec(vec![h, w, self.channels()], pixels)
    }

    fn channels(&self) -> usize {
        match self.format {
            Format::Gray => 1,
            _ => 3,
        }
    }
}

impl Operator for ImageDecoder {
    fn name(&self) -> &str {
        NAME
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        if x.dtype != DType::U8 {
            return metal_mps_ir::invalid!("{NAME} takes UINT8 encoded bytes, not {}", x.dtype);
        }
        Ok(vec![(
            DType::U8,
            Some(vec![
                Dim::Unknown,
                Dim::Unknown,
                Dim::Fixed(self.channels()),
            ]),
        )])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        if x.dtype() != DType::U8 || x.shape().len() != 1 {
            return metal_mps_ir::invalid!(
                "{NAME} takes a 1-D UINT8 tensor, not {} of shape {:?}",
                x.dtype(),
                x.shape()
            );
        }
        Ok(vec![self.decode(x.as_bytes())?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A 2x1 RGB image as binary PPM ("P6"), written by hand: red, then (10, 20, 30).
    const PPM: &[u8] = b"P6\n2 1\n255\n\xff\x00\x00\x0a\x14\x1e";

    fn decode(format: Format, bytes: &[u8]) -> Result<Tensor> {
        ImageDecoder { format }.decode(bytes)
    }

    #[test]
    fn decodes_to_rgb_bgr_and_pil_luma() {
        let rgb = decode(Format::Rgb, PPM).unwrap();
        assert_eq!(rgb.shape(), &[1, 2, 3]);
        assert_eq!(rgb.as_bytes(), [255, 0, 0, 10, 20, 30]);
        let bgr = decode(Format::Bgr, PPM).unwrap();
        assert_eq!(bgr.as_bytes(), [0, 0, 255, 30, 20, 10]);
        // PIL: Image.new("RGB", (1, 1), c).convert("L") gives 76 for red, 18 for (10, 20, 30).
        let gray = decode(Format::Gray, PPM).unwrap();
        assert_eq!(gray.shape(), &[1, 2, 1]);
        assert_eq!(gray.as_bytes(), [76, 18]);
    }

    #[test]
    fn corrupt_or_unknown_data_is_an_error_naming_the_op() {
        let truncated = decode(Format::Rgb, &PPM[..12]).unwrap_err().to_string();
        assert!(truncated.contains(NAME), "{truncated}");
        let unknown = decode(Format::Rgb, b"not an image at all")
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains(NAME) && unknown.contains("format"),
            "{unknown}"
        );
    }
}
