//! An embedding table whose rows are looked up by token id: in memory, or left in the
//! checkpoint file and read row by row when a lookup needs them.
//!
//! A BERT-like model's word embeddings are its largest tensor (all-MiniLM-L6-v2: 47 of 90 MB;
//! XLM-R base: 769 MB), yet a lookup needs only the rows of the input's tokens. Read eagerly,
//! the whole table costs its load time (the kernel zero-fills every fresh page first) and its
//! memory; left in the file, a lookup costs one positioned read per token (~1 µs for a
//! 384-wide f32 row, from the page cache). The file stays open, so the rows read are those of
//! the file as loaded even if its name is removed later; like a memory-mapped checkpoint, it
//! must not be rewritten in place while the model is loaded.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

/// A little-endian f32 matrix `[rows, cols]` at byte `at` of an open checkpoint file.
#[derive(Debug, Clone)]
pub(crate) struct FileRows {
    pub(crate) file: Arc<std::fs::File>,
    /// The file's path (for messages).
    pub(crate) path: PathBuf,
    pub(crate) at: u64,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl FileRows {
    /// Fill `dst` from the file `at` bytes into the table.
    fn read(&self, dst: &mut [f32], at: u64) -> Result<()> {
        read_at(&self.file, bytemuck::cast_slice_mut(dst), self.at + at)
            .map_err(|e| candle_core::Error::Msg(format!("reading {}: {e}", self.path.display())))
    }

    /// Rows `ids` as `[ids.len(), cols]` on the CPU.
    pub(crate) fn gather(&self, ids: &[u32]) -> Result<Tensor> {
        let row_bytes = self.cols * 4;
        let mut out = vec![0f32; ids.len() * self.cols];
        for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(self.cols.max(1))) {
            let id = id as usize;
            if id >= self.rows {
                candle_core::bail!(
                    "token id {id} is outside the embedding table ({} rows) of {}",
                    self.rows,
                    self.path.display()
                );
            }
            self.read(dst, (id * row_bytes) as u64)?;
        }
        Tensor::from_vec(out, (ids.len(), self.cols), &Device::Cpu)
    }

    /// The whole table, read now (one read).
    pub(crate) fn tensor(&self) -> Result<Tensor> {
        let mut all = vec![0f32; self.rows * self.cols];
        self.read(&mut all, 0)?;
        Tensor::from_vec(all, (self.rows, self.cols), &Device::Cpu)
    }
}

/// An embedding table: a tensor, or rows read from the file on demand.
#[derive(Debug, Clone)]
pub(crate) enum Rows {
    Tensor(Tensor),
    File(FileRows),
}

impl Rows {
    /// Rows `ids` as `[ids.len(), cols]`.
    pub(crate) fn gather(&self, ids: &[u32]) -> Result<Tensor> {
        match self {
            Self::Tensor(t) => t.index_select(&Tensor::new(ids, t.device())?, 0),
            Self::File(f) => f.gather(ids),
        }
    }

    /// The whole table as a tensor (a tied output layer needs all of it).
    pub(crate) fn tensor(&self) -> Result<Tensor> {
        match self {
            Self::Tensor(t) => Ok(t.clone()),
            Self::File(f) => f.tensor(),
        }
    }

    pub(crate) fn dtype(&self) -> DType {
        match self {
            Self::Tensor(t) => t.dtype(),
            Self::File(_) => DType::F32,
        }
    }
}

/// Fill `buf` from `f` at byte `at`, without moving (or needing) a shared cursor.
pub(crate) fn read_at(f: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(f, buf, at)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek};
        let mut f = f.try_clone()?;
        f.seek(std::io::SeekFrom::Start(at))?;
        f.read_exact(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_the_file_equal_the_tensor_and_bad_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.bin");
        let (rows, cols) = (7usize, 5usize);
        let values: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
        // 3 bytes of something else first: rows start at an arbitrary offset.
        let mut bytes = vec![1u8, 2, 3];
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(&path, &bytes).unwrap();
        let table = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
        let file = Rows::File(FileRows {
            file: Arc::new(std::fs::File::open(&path).unwrap()),
            path: path.clone(),
            at: 3,
            rows,
            cols,
        });
        let mem = Rows::Tensor(table.clone());
        let ids = [6u32, 0, 3, 3];
        let a = file.gather(&ids).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, mem.gather(&ids).unwrap().to_vec2::<f32>().unwrap());
        assert_eq!(
            file.tensor().unwrap().to_vec2::<f32>().unwrap(),
            table.to_vec2::<f32>().unwrap()
        );
        // Removing the file's name does not matter: it stays open.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.gather(&ids).unwrap().to_vec2::<f32>().unwrap(), a);
        let e = file.gather(&[7]).unwrap_err().to_string();
        assert!(e.contains("token id 7") && e.contains("7 rows"), "{e}");
    }
}
