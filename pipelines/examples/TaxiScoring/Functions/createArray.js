// The seed's JavaScript UDF: the model input array, in the column order the model expects.
function createArray(vendorid, weekday, pickuphour, passenger, distance) {
    return [vendorid, weekday, pickuphour, passenger, distance];
}
