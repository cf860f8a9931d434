"""Fixture projects modelled on public ASA projects, written into a temporary folder by each test.

Every file is written here (no copies of the public files): the layouts, key names and shapes
follow the sources named on each builder; the data and expected outputs are small and their
results are computed by hand in the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write(path: Path, content: Any, bom: bool = False, crlf: bool = False) -> Path:
    """Write text or JSON (pretty, as the tools write it); optionally as a Windows editor does."""
    text = content if isinstance(content, str) else json.dumps(content, indent=4)
    if crlf:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def dataops_project(root: Path) -> Path:
    """Modelled on Azure-Samples/modern-data-warehouse-dataops ``single_tech_samples/streamanalytics``:
    ``asaproj.json`` with empty ``configurations``, inputs only in ``test/testConfig.json``, a
    case expecting no rows written as ``"FilePath": "/dev/null"``. The data file holds objects
    concatenated with no separator (an Event Hub capture dump)."""
    write(root / "asaproj.json", {"name": "streamanalytics", "startFile": "streamanalytics-tech-sample.asaql",
                                  "configurations": []})
    write(root / "streamanalytics-tech-sample.asaql",
          "SELECT\n    * INTO bloboutput\nFROM\n    iothub\nWHERE Temperature > 27\n")
    test = root / "test"
    write(test / "hot.json", '{"messageId":1,"deviceId":"d1","temperature":30.5,"humidity":60}'
                             '{"messageId":2,"deviceId":"d1","temperature":26.9,"humidity":61}'
                             '{"messageId":3,"deviceId":"d2","temperature":27.25,"humidity":62}')
    write(test / "cold.json", [{"messageId": 4, "deviceId": "d1", "temperature": 20.0, "humidity": 50}])
    write(test / "equal.json", '{"messageId":5,"deviceId":"d3","temperature":27,"humidity":55}\n')
    # By hand: 30.5 and 27.25 are > 27; 26.9, 20.0 and 27 are not.
    write(test / "hot_expected.json", [
        {"messageId": 3, "deviceId": "d2", "temperature": 27.25, "humidity": 62},
        {"messageId": 1, "deviceId": "d1", "temperature": 30.5, "humidity": 60}])

    def case(name: str, data: str, expected: str) -> dict:
        return {"Name": name,
                "Inputs": [{"InputAlias": "iothub", "Type": "Data Stream", "Format": "Json", "FilePath": data,
                            "ScriptType": "InputMock"}],
                "ExpectedOutputs": [{"OutputAlias": "bloboutput", "FilePath": expected, "Required": True}]}

    write(test / "testConfig.json", {"Script": "../streamanalytics-tech-sample.asaql", "TestCases": [
        case("temperature_greater_than_27_degrees", "hot.json", "hot_expected.json"),
        case("temperature_less_than_27_degrees", "cold.json", "/dev/null"),
        case("temperature_equal_to_27_degrees", "equal.json", "/dev/null")]})
    return root


SPLIT_RECORDS_JS = """// Splits "[a:b:c][d:e:f]" into records {e1: "a", e2: "b", e3: "c"}, one per bracket.
function main(text) {
    var out = [];
    var groups = text.split("]");
    for (var i = 0; i < groups.length; i++) {
        var body = groups[i].replace("[", "");
        if (body === "") continue;
        var parts = body.split(":");
        var rec = {};
        for (var j = 0; j < parts.length; j++) rec["e" + (j + 1)] = parts[j];
        out.push(rec);
    }
    return out;
}
"""


def sensor_array_project(root: Path) -> Path:
    """Modelled on sandervandevelde/ASATestJSonArrray (VS Code, 2024): a JavaScript UDF ``main``
    (``Functions/JavaScriptUDF1.js`` + ``.js.json``) turning a packed string into an array, a
    ``CROSS APPLY GetArrayElements``, the new local-input shape (``Name``, ``DataSourceType:
    "Local Input"``, ``Serialization``), ``Sku.StreamingUnits`` as a string, JSON lines data."""
    write(root / "asaproj.json", {"name": "SensorArray", "startFile": "SensorArray.asaql", "configurations": [
        {"filePath": "JobConfig.json", "subType": "JobConfig"},
        {"filePath": "Inputs/Local_InputJson1.json", "subType": "InputMock"},
        {"filePath": "Functions/JavaScriptUDF1.js.json", "subType": "JSFunction"}]})
    write(root / "JobConfig.json", {
        "ScriptType": "JobConfig", "DataLocale": "en-US", "OutputErrorPolicy": "Retry",
        "EventsLateArrivalMaxDelayInSeconds": 5, "EventsOutOfOrderMaxDelayInSeconds": 0,
        "EventsOutOfOrderPolicy": "Adjust", "Sku": {"Name": "StandardV2", "StreamingUnits": "1"},
        "CompatibilityLevel": "1.2", "UseSystemAssignedIdentity": False,
        "GlobalStorage": {"AccountName": None, "AccountKey": None, "AuthenticationMode": "ConnectionString"},
        "ContentStoragePolicy": "SystemAccount",
        "CustomCodeStorage": {"AccountName": None, "AccountKey": None, "ContainerName": None,
                              "Path": "UserCustomCode.zip"},
        "DataSourceCredentialDomain": None, "Tags": {}})
    write(root / "Inputs" / "Local_InputJson1.json", {
        "Name": "InputJson1", "Type": "Data Stream", "DataSourceType": "Local Input",
        "Serialization": {"Type": "Json", "Encoding": "UTF8"}, "FilePath": "arrayjson.json",
        "ScriptType": "InputMock"})
    write(root / "Inputs" / "arrayjson.json",
          '{"id": 1, "record": "[1:2:3][4:5:6]"}\n{"id": 2, "record": "[7:8:9]"}\n')
    write(root / "Functions" / "JavaScriptUDF1.js", SPLIT_RECORDS_JS)
    write(root / "Functions" / "JavaScriptUDF1.js.json", {
        "Name": "JavaScriptUDF1", "Type": "Scalar", "ScriptType": "JSFunction",
        "FunctionInputs": [{"DataType": "nvarchar(max)", "IsConfigurationParameter": None}], "OutputType": "any"})
    write(root / "SensorArray.asaql", """
with converted AS
(
SELECT
    InputJson1.id,
\tUDF.JavaScriptUDF1(InputJson1.record) as rec
FROM
    InputJson1
)

SELECT
    converted.id,
\tSensorValue.ArrayValue.e1 AS Record1,
\tSensorValue.ArrayValue.e2 AS Record2,
\tSensorValue.ArrayValue.e3 AS Record3
INTO output
FROM
converted
\tCROSS APPLY GetArrayElements(converted.rec) AS SensorValue
""")
    return root


TOLL_QUERY = """-- Expired registrations at the toll (after Azure/azure-stream-analytics Samples/TollApp)
SELECT EntryStream.EntryTime, EntryStream.LicensePlate, EntryStream.TollId,
       Registration.RegistrationId, udf.plateRegion(EntryStream.LicensePlate) AS Region
INTO ExpiredOut
FROM EntryStream TIMESTAMP BY EntryTime
JOIN Registration ON EntryStream.LicensePlate = Registration.LicensePlate
WHERE Registration.Expired = '1'
"""


def windows_project(root: Path) -> Path:
    """A project as Visual Studio / VS Code on Windows leave it (Azure/azure-stream-analytics
    ``Samples/OnnxExample`` 2020, AndreasHassing/ASAVsCodeReferenceDataIssueRepro): UTF-8 BOM and
    CRLF in every file, ``\\`` in paths, the old local-input shape (``InputAlias``, ``Format:
    "JSON"``, ``FilePath: "..\\\\Data\\\\..."``), ``"Reference Data"`` casing, a live Event Hub with a
    masked key, a SQL Database output, the Visual Studio subType ``JSFunctionConfig``, lower-case
    keys in JobConfig and ``StreamingUnits`` as a string. The query is TollApp's expired-registration
    join with CSV reference data."""
    win = {"bom": True, "crlf": True}
    write(root / "asaproj.json", {"name": "TollApp", "startFile": "TollApp.asaql", "configurations": [
        {"filePath": "JobConfig.json", "subType": "JobConfig"},
        {"filePath": "Inputs\\EntryStream.json", "subType": "Input"},
        {"filePath": "Inputs\\Local_EntryStream.json", "subType": "InputMock"},
        {"filePath": "Inputs\\local_Registration.json", "subType": "InputMock"},
        {"filePath": "Outputs\\ExpiredOut.json", "subType": "Output"},
        {"filePath": "Functions\\plateRegion.js.json", "subType": "JSFunctionConfig"}]}, **win)
    write(root / "JobConfig.json", {
        "dataLocale": "en-US", "outputErrorPolicy": "Retry", "eventsLateArrivalMaxDelayInSeconds": "10",
        "eventsOutOfOrderMaxDelayInSeconds": 2, "eventsOutOfOrderPolicy": "drop", "StreamingUnits": "3",
        "compatibilityLevel": "1.2", "GlobalStorageAccountName": None, "scriptType": "JobConfig"}, **win)
    write(root / "Inputs" / "EntryStream.json", {
        "Name": "EntryStream", "Type": "Data Stream", "DataSourceType": "Event Hub",
        "EventHubProperties": {"ServiceBusNamespace": "tollapp", "EventHubName": "entry",
                               "SharedAccessPolicyName": "RootManageSharedAccessKey",
                               "SharedAccessPolicyKey": "********", "ConsumerGroupName": "",
                               "AuthenticationMode": "ConnectionString"},
        "IoTHubProperties": None, "BlobStorageProperties": None,
        "Serialization": {"Type": "Json", "Encoding": "UTF8"}, "PartitionKey": None,
        "CompresssionType": "None", "ScriptType": "Input"}, **win)
    write(root / "Inputs" / "Local_EntryStream.json", {
        "InputAlias": "EntryStream", "Type": "Data Stream", "Format": "JSON",
        "FilePath": "..\\Data\\Entry.json", "ScriptType": "InputMock", "SerializationDllPath": None,
        "SerializationClassName": None, "Sample": None}, **win)
    write(root / "Inputs" / "local_Registration.json", {
        "InputAlias": "Registration", "Type": "Reference Data", "Format": "CSV",
        "FilePath": "..\\Data\\Registration.csv", "ScriptType": "InputMock"}, **win)
    write(root / "Outputs" / "ExpiredOut.json", {
        "Name": "ExpiredOut", "DataSourceType": "SQL Database",
        "SQLDatabaseProperties": {"Database": "tolls", "Server": "tollsrv", "User": "asa", "Password": None,
                                  "Table": "Expired", "MaxWriterCount": 1, "MaxBatchCount": 10000},
        "ScriptType": "Output"}, **win)
    write(root / "Functions" / "plateRegion.js", "// The region letters of a plate\n"
          "function plateRegion(plate) {\n    return plate.substring(0, 2);\n}\n", **win)
    write(root / "Functions" / "plateRegion.js.json", {
        "Name": "plateRegion", "Type": "Scalar", "ScriptType": "JSFunctionConfig",
        "FunctionInputs": [{"DataType": "nvarchar(max)"}], "OutputType": "nvarchar(max)"}, **win)
    write(root / "TollApp.asaql", TOLL_QUERY, **win)
    write(root / "Data" / "Entry.json", [
        {"EntryTime": "2014-09-10T12:01:00.0000000Z", "LicensePlate": "JNB 7001", "TollId": 1},
        {"EntryTime": "2014-09-10T12:02:00.0000000Z", "LicensePlate": "YXZ 1001", "TollId": 1},
        {"EntryTime": "2014-09-10T12:02:30.0000000Z", "LicensePlate": "ABC 1004", "TollId": 2},
        {"EntryTime": "2014-09-10T12:03:00.0000000Z", "LicensePlate": "ZZZ 9999", "TollId": 3}], **win)
    write(root / "Data" / "Registration.csv", "LicensePlate,RegistrationId,Expired\n"
          "JNB 7001,999001,0\nYXZ 1001,999002,1\nABC 1004,999003,1\n", **win)
    write(root / "test" / "testConfig.json", {"Script": "..\\TollApp.asaql", "TestCases": [{
        "Name": "Expired registrations",
        "Inputs": [
            {"InputAlias": "EntryStream", "Type": "Data Stream", "Format": "JSON", "FilePath": "..\\Data\\Entry.json",
             "ScriptType": "InputMock"},
            {"InputAlias": "Registration", "Type": "Reference data", "Format": "CSV",
             "FilePath": "..\\Data\\Registration.csv", "ScriptType": "InputMock"}],
        "ExpectedOutputs": [{"OutputAlias": "ExpiredOut", "FilePath": "expected_expired.json",
                             "IgnoreFields": ["TollId"], "Required": "true"}]}]}, **win)
    # By hand: YXZ 1001 and ABC 1004 are expired ('1'); JNB 7001 is not; ZZZ 9999 is not registered.
    # TollId is ignored (the values below are deliberately not the input's).
    write(root / "test" / "expected_expired.json",
          '{"EntryTime":"2014-09-10T12:02:00.0000000Z","LicensePlate":"YXZ 1001","TollId":0,'
          '"RegistrationId":"999002","Region":"YX"}\r\n'
          '{"EntryTime":"2014-09-10T12:02:30Z","LicensePlate":"ABC 1004","TollId":0,'
          '"RegistrationId":"999003","Region":"AB"}\r\n', bom=True)
    return root


CREATE_ARRAY_JS = ("function createArray(vendorid, weekday, pickuphour, passenger, distance) {\r\n"
                   "    return [vendorid, weekday, pickuphour, passenger, distance];\r\n}")

SCORING_QUERY = """WITH ModelInput AS (
    SELECT tripid, udf.createArray(vendorid, weekday, pickuphour, passenger, distance) AS inputArray
    FROM trips
)
SELECT tripid, udf.score(inputArray) AS fare
INTO scored
FROM ModelInput
"""


def arm_template(root: Path, endpoint: str = "https://example.invalid/score") -> Path:
    """An exported ARM template of the ML UDF doc's job (learn.microsoft.com/azure/stream-analytics/
    machine-learning-udf; resource shape of Azure/azure-stream-analytics ClickStream-RefJoin's
    JobARMTemplate.json and the REST example Function_Create_AzureMLService.json): a JavaScript
    UDF with an inline script and an Azure ML Service function whose endpoint and batch size come
    from ``[parameters(...)]``, its key null; event ordering left out (ARM defaults)."""
    template = {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "StreamAnalyticsJobName": {"type": "string", "defaultValue": "taxi-scoring"},
            "Function_score_endpoint": {"type": "string"},
            "Function_score_apiKey": {"type": "securestring"},
            "Function_score_batchSize": {"type": "int", "defaultValue": 1000},
            "StreamingUnits": {"type": "int", "defaultValue": 3},
        },
        "resources": [{
            "type": "Microsoft.StreamAnalytics/StreamingJobs",
            "apiVersion": "2021-10-01-preview",
            "name": "[parameters('StreamAnalyticsJobName')]",
            "location": "[resourceGroup().location]",
            "properties": {
                "sku": {"name": "StandardV2"},
                "outputErrorPolicy": "Stop",
                "compatibilityLevel": "1.2",
                "dataLocale": "en-US",
                "inputs": [{"name": "trips", "properties": {
                    "type": "Stream",
                    "datasource": {"type": "Microsoft.ServiceBus/EventHub", "properties": {
                        "serviceBusNamespace": "taxi", "eventHubName": "trips", "consumerGroupName": "$Default",
                        "sharedAccessPolicyName": "listen", "sharedAccessPolicyKey": None}},
                    "serialization": {"type": "Json", "properties": {"encoding": "UTF8"}}}}],
                "outputs": [{"name": "scored", "properties": {
                    "datasource": {"type": "Microsoft.Storage/Blob", "properties": {
                        "storageAccounts": [{"accountName": "taxiout", "accountKey": None}],
                        "container": "scored", "pathPattern": "{date}", "dateFormat": "yyyy/MM/dd"}},
                    "serialization": {"type": "Json", "properties": {"encoding": "UTF8",
                                                                    "format": "LineSeparated"}}}}],
                "functions": [
                    {"name": "createArray", "properties": {"type": "Scalar", "properties": {
                        "inputs": [{"dataType": "bigint"}, {"dataType": "nvarchar(max)"}, {"dataType": "bigint"},
                                   {"dataType": "bigint"}, {"dataType": "float"}],
                        "output": {"dataType": "array"},
                        "binding": {"type": "Microsoft.StreamAnalytics/JavascriptUdf",
                                    "properties": {"script": CREATE_ARRAY_JS}}}}},
                    {"name": "score", "properties": {"type": "Scalar", "properties": {
                        "inputs": [{"dataType": "array", "isConfigurationParameter": False}],
                        "output": {"dataType": "float"},
                        "binding": {"type": "Microsoft.MachineLearningServices", "properties": {
                            "endpoint": "[parameters('Function_score_endpoint')]",
                            "apiKey": "[parameters('Function_score_apiKey')]",
                            "inputs": [{"name": "data", "dataType": "array", "mapTo": 0}],
                            "outputs": [{"name": "output", "dataType": "double", "mapTo": 0}],
                            "batchSize": "[parameters('Function_score_batchSize')]",
                            "numberOfParallelRequests": 2}}}}}],
                "transformation": {"name": "Transformation", "properties": {
                    "streamingUnits": "[parameters('StreamingUnits')]",
                    "query": SCORING_QUERY.replace("\n", "\r\n")}},
            },
        }],
    }
    path = write(root / "taxi-scoring.JobTemplate.json", template)
    write(root / "taxi-scoring.JobTemplate.parameters.json", {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"Function_score_endpoint": {"value": endpoint}, "Function_score_apiKey": {"value": None},
                       "Function_score_batchSize": {"value": 50}}})
    return path
