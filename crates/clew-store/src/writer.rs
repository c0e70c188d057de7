//! A Parquet block writer that gathers and encodes the columns of each chunk of rows on
//! several threads.
//!
//! Writing a block is the one step of the write path that runs on a single thread while
//! assembly and the receivers wait for memory: most of its cost is per column (gathering rows
//! into sorted order, dictionary encoding, compression), and one column does not depend on
//! another. The Parquet crate hands out a writer per column of a row group; chunks of rows
//! are fed to them as they come, the columns spread over threads, so memory stays that of
//! the encoded row group, as with the Arrow writer.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::writer::SerializedFileWriter;
use parking_lot::Mutex;

/// Threads a chunk's columns are spread over: the cores, up to four.
fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4))
}

/// Runs `work(i)` for every `i` in `order` on up to [`threads`] threads, each taking the next
/// index when done with one: put the heaviest first so that the threads finish together.
pub(crate) fn spread<T: Send>(order: &[usize], work: impl Fn(usize) -> T + Sync) -> Vec<(usize, T)> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(order.len()));
    let run = || {
        while let Some(&index) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let result = work(index);
            results.lock().push((index, result));
        }
    };
    let helpers = threads().min(order.len()).saturating_sub(1);
    if helpers == 0 {
        run();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..helpers {
                scope.spawn(run);
            }
            run();
        });
    }
    results.into_inner()
}

/// Column indices, heaviest (by the memory of the given batches' columns) first.
fn heaviest_first(columns: usize, weight: impl Fn(usize) -> usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..columns).collect();
    order.sort_by_key(|&column| std::cmp::Reverse(weight(column)));
    order
}

/// `interleave_record_batch` with the columns gathered on several threads.
pub(crate) fn interleave_columns(sources: &[&RecordBatch], indices: &[(usize, usize)]) -> Result<RecordBatch, ParquetError> {
    let schema = sources.first().map(|batch| batch.schema()).ok_or_else(|| ParquetError::General("no rows to gather".into()))?;
    let columns = schema.fields().len();
    let order = heaviest_first(columns, |column| sources.iter().map(|batch| batch.column(column).get_array_memory_size()).sum());
    let mut gathered: Vec<(usize, Result<ArrayRef, ParquetError>)> = spread(&order, |column| {
        let arrays: Vec<&dyn Array> = sources.iter().map(|batch| batch.column(column).as_ref()).collect();
        Ok(interleave(&arrays, indices)?)
    });
    gathered.sort_by_key(|(column, _)| *column);
    let arrays = gathered.into_iter().map(|(_, array)| array).collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// Writes batches of one schema as row groups of at most the properties' row-group row count.
pub(crate) struct BlockWriter {
    writer: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The Parquet leaf columns of each Arrow column (a map has two: keys and values).
    leaves: Vec<Range<usize>>,
    /// The open row group's column writers, one per leaf; empty when none is open.
    columns: Vec<Mutex<ArrowColumnWriter>>,
    rows: usize,
    row_groups: usize,
    max_rows: usize,
}

impl BlockWriter {
    pub(crate) fn try_new(file: File, schema: SchemaRef, properties: WriterProperties) -> Result<Self, ParquetError> {
        let max_rows = properties.max_row_group_row_count().unwrap_or(usize::MAX);
        // The Arrow writer sets up what the footer needs (the Arrow schema among the key-value
        // metadata); its lower-level parts then write the row groups.
        let (writer, factory) = ArrowWriter::try_new(file, Arc::clone(&schema), Some(properties))?.into_serialized_writer()?;
        let descriptor = writer.schema_descr();
        let mut leaves: Vec<Range<usize>> = vec![0..0; schema.fields().len()];
        for leaf in 0..descriptor.num_columns() {
            let root = descriptor.get_column_root_idx(leaf);
            let range = leaves.get_mut(root).ok_or_else(|| ParquetError::General("a leaf column outside the schema".into()))?;
            *range = if range.end == 0 { leaf..leaf + 1 } else { range.start..leaf + 1 };
        }
        Ok(Self { writer, factory, schema, leaves, columns: Vec::new(), rows: 0, row_groups: 0, max_rows: max_rows.max(1) })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.columns.is_empty() {
                self.columns = self.factory.create_column_writers(self.row_groups)?.into_iter().map(Mutex::new).collect();
            }
            let take = (self.max_rows - self.rows).min(batch.num_rows() - offset);
            self.write_part(&batch.slice(offset, take))?;
            self.rows += take;
            offset += take;
            if self.rows >= self.max_rows {
                self.close_row_group()?;
            }
        }
        Ok(())
    }

    /// Feeds rows of the open row group to its column writers, columns spread over threads.
    fn write_part(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        let order = heaviest_first(batch.num_columns(), |column| batch.column(column).get_array_memory_size());
        let (schema, leaves, columns) = (&self.schema, &self.leaves, &self.columns);
        let results = spread(&order, |column| -> Result<(), ParquetError> {
            let arrow_leaves = compute_leaves(schema.field(column), batch.column(column))?;
            for (leaf, writer) in arrow_leaves.iter().zip(&columns[leaves[column].clone()]) {
                writer.lock().write(leaf)?;
            }
            Ok(())
        });
        results.into_iter().try_for_each(|(_, result)| result)
    }

    /// Closes the open row group: each column's last page is encoded on the threads, then
    /// the column chunks are written in order.
    fn close_row_group(&mut self) -> Result<(), ParquetError> {
        if self.columns.is_empty() {
            return Ok(());
        }
        let writers: Vec<Mutex<Option<ArrowColumnWriter>>> =
            std::mem::take(&mut self.columns).into_iter().map(|w| Mutex::new(Some(w.into_inner()))).collect();
        let order = heaviest_first(writers.len(), |leaf| writers[leaf].lock().as_ref().map_or(0, ArrowColumnWriter::memory_size));
        let mut chunks = spread(&order, |leaf| {
            writers[leaf].lock().take().ok_or_else(|| ParquetError::General("a column closed twice".into()))?.close()
        });
        chunks.sort_by_key(|(leaf, _)| *leaf);
        let mut row_group = self.writer.next_row_group()?;
        for (_, chunk) in chunks {
            chunk?.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        self.rows = 0;
        self.row_groups += 1;
        Ok(())
    }

    /// Writes the last row group and the footer; hands back the file.
    pub(crate) fn finish(mut self) -> Result<File, ParquetError> {
        self.close_row_group()?;
        self.writer.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, MapBuilder, StringArray, StringBuilder};
    use datafusion::arrow::compute::{concat_batches, interleave_record_batch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn batch(rows: i64) -> RecordBatch {
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for row in 0..rows {
            map.keys().append_value(format!("k{}", row % 7));
            map.values().append_value(format!("v{row}"));
            map.append(row % 5 != 0).expect("map row");
        }
        let map = map.finish();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
            Field::new("attributes", map.data_type().clone(), true),
            Field::new("last", DataType::Int64, false),
        ]));
        let texts: StringArray = (0..rows).map(|n| (n % 3 != 0).then(|| format!("t{}", n % 11))).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..rows)),
            Arc::new(texts),
            Arc::new(map),
            Arc::new(Int64Array::from_iter_values((0..rows).map(|n| -n))),
        ];
        RecordBatch::try_new(schema, columns).expect("batch")
    }

    #[test]
    fn rows_read_back_in_order_in_row_groups_of_the_given_size() {
        let batch = batch(2_500);
        let path = std::env::temp_dir().join(format!("clew-writer-test-{}.parquet", std::process::id()));
        let properties = WriterProperties::builder().set_max_row_group_row_count(Some(1_000)).build();
        let mut writer = BlockWriter::try_new(File::create(&path).expect("file"), batch.schema(), properties).expect("writer");
        // Chunks that cross row-group boundaries.
        for (offset, length) in [(0, 700), (700, 700), (1_400, 1_100)] {
            writer.write(&batch.slice(offset, length)).expect("write");
        }
        writer.finish().expect("finish");
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).expect("open")).expect("reader");
        let sizes: Vec<i64> = builder.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(sizes, vec![1_000, 1_000, 500]);
        let read: Vec<RecordBatch> = builder.build().expect("reader").collect::<Result<_, _>>().expect("read");
        let read = concat_batches(&read[0].schema(), &read).expect("concat");
        let _ = std::fs::remove_file(&path);
        assert_eq!(read.num_rows(), 2_500);
        for column in 0..batch.num_columns() {
            assert_eq!(read.column(column).to_data(), batch.column(column).to_data(), "column {column}");
        }
    }

    #[test]
    fn columns_gathered_on_threads_are_the_rows_asked_for() {
        let (a, b) = (batch(300), batch(200));
        let indices: Vec<(usize, usize)> = (0..500).map(|i| if i % 3 == 0 { (1, (i * 7) % 200) } else { (0, (i * 13) % 300) }).collect();
        let expected = interleave_record_batch(&[&a, &b], &indices).expect("serial");
        let gathered = interleave_columns(&[&a, &b], &indices).expect("parallel");
        assert_eq!(gathered, expected);
    }
}
