//! SQL functions of Clew's own.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// `resource_attributes(resource)`: the attributes of each row's encoded resource as a map of
/// keys to rendered values. The `spans` view's `resource_attributes` column is this function
/// of the stored `resource` column: a resource's attributes are stored once per distinct
/// resource, not once per span, and decoded once per distinct value of a batch.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ResourceAttributes {
    signature: Signature,
}

impl ScalarUDFImpl for ResourceAttributes {
    fn name(&self) -> &str {
        "resource_attributes"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(clew_store::map_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [resource] = args.args.as_slice() else {
            return Err(DataFusionError::Plan("resource_attributes takes one argument, the resource column".into()));
        };
        let rows = resource.clone().into_array(args.number_rows)?;
        let maps = clew_store::resource_attribute_maps(rows.as_ref()).map_err(|e| DataFusionError::Execution(e.to_string()))?;
        Ok(ColumnarValue::Array(maps))
    }
}

pub(crate) fn resource_attributes() -> ScalarUDF {
    ScalarUDF::new_from_impl(ResourceAttributes { signature: Signature::any(1, Volatility::Immutable) })
}
