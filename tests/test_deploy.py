"""The files in deploy/: the CloudFormation template (its build role allows every AWS call
mirror makes, and nothing as a wildcard), the systemd units and the crontab example."""

from __future__ import annotations

import ast
import configparser
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from botocore import xform_name

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
TEMPLATE = DEPLOY / "codebuild.yaml"
AWS_MODULE = ROOT / "mirror" / "aws.py"

# What `skopeo copy` does on ECR's registry API (/v2/...), and mirror's own HEAD on a destination
# manifest (BatchGetImage). These are not boto3 calls, so the scan below cannot find them.
SKOPEO_ECR_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
)

# botocore client methods that are not API operations (no IAM action behind them).
_NOT_OPERATIONS = frozenset({"close", "can_paginate"})


# --- reading the template ------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """A safe loader that reads CloudFormation's short forms (!Ref, !Sub, !If...) as their long
    forms ({"Ref": ...}, {"Fn::Sub": ...}, {"Fn::If": ...})."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@cache
def _template() -> dict[str, Any]:
    loaded = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506 (a SafeLoader)
    assert isinstance(loaded, dict)
    return loaded


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: body for name, body in _template()["Resources"].items() if body["Type"] == kind}


def _one(kind: str) -> dict[str, Any]:
    found = _resources(kind)
    assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
    return next(iter(found.values()))


def _role_of(value: Any) -> str:
    """The logical name of the role in a {"Fn::GetAtt": [role, "Arn"]}."""
    assert isinstance(value, dict)
    assert "Fn::GetAtt" in value, value
    name, attribute = value["Fn::GetAtt"]
    assert attribute == "Arn"
    return str(name)


def _branches(item: Any) -> list[dict[str, Any]]:
    """The statements an item of a Statement list may become: both sides of an Fn::If, none for
    AWS::NoValue."""
    if item == {"Ref": "AWS::NoValue"}:
        return []
    if isinstance(item, dict) and set(item) == {"Fn::If"}:
        _condition, when_true, when_false = item["Fn::If"]
        return _branches(when_true) + _branches(when_false)
    assert isinstance(item, dict), item
    return [item]


def _statement_items(role: str) -> list[Any]:
    body = _template()["Resources"][role]
    assert body["Type"] == "AWS::IAM::Role"
    return [
        item
        for policy in body["Properties"].get("Policies", [])
        for item in policy["PolicyDocument"]["Statement"]
    ]


def _statements(role: str) -> list[dict[str, Any]]:
    return [statement for item in _statement_items(role) for statement in _branches(item)]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _allowed_actions(role: str) -> set[str]:
    """Every action some Allow statement of the role grants, case-folded (IAM ignores case)."""
    return {
        str(action).casefold()
        for statement in _statements(role)
        if statement.get("Effect") == "Allow"
        for action in _as_list(statement.get("Action", []))
    }


def _build_role() -> str:
    return _role_of(_one("AWS::CodeBuild::Project")["Properties"]["ServiceRole"])


def _batch_role() -> str:
    project = _one("AWS::CodeBuild::Project")["Properties"]
    return _role_of(project["BuildBatchConfig"]["ServiceRole"])


def _missing(actions: set[str], role: str) -> set[str]:
    granted = _allowed_actions(role)
    return {action for action in actions if action.casefold() not in granted}


def _walk(node: Any) -> Any:
    """Every dict in the template, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


# --- the scan of mirror/aws.py -------------------------------------------------------------------


@dataclass(frozen=True)
class AwsCall:
    """One boto3 client call in the scanned source."""

    service: str | None  # the boto3 service name, None when it could not be told
    method: str  # the client method (snake_case), or the operation a paginator is for
    line: int


def _boto3_service(node: ast.AST) -> str | None:
    """The service of the first `boto3.client("<service>", ...)` (or `<session>.client(...)`,
    or mirror's own wrapper `_client("<service>", ...)`) inside an expression."""
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Name)
            and sub.func.id == "_client"
            and sub.args
            and isinstance(sub.args[0], ast.Constant)
            and isinstance(sub.args[0].value, str)
        ):
            return sub.args[0].value
        if (
            isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Attribute)
            and sub.func.attr == "client"
            and (
                _receiver_name(sub.func.value) == "boto3"
                or "session" in _receiver_name(sub.func.value).casefold()
            )
            and sub.args
            and isinstance(sub.args[0], ast.Constant)
            and isinstance(sub.args[0].value, str)
        ):
            return sub.args[0].value
    return None


def _assigned_clients(scope: ast.AST, *, attribute_of: str | None) -> dict[str, str]:
    """Names (or, with attribute_of="self", attributes of self) that the scope assigns a boto3
    client to, with the client's service."""
    found: dict[str, str] = {}
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        service = _boto3_service(value)
        if service is None:
            continue
        for target in targets:
            if attribute_of is None and isinstance(target, ast.Name):
                found[target.id] = service
            elif (
                attribute_of is not None
                and isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == attribute_of
            ):
                found[target.attr] = service
    return found


def _receiver_name(node: ast.expr) -> str:
    """`x` for x, x.y.x and x(...): what the object a method is called on is named."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _receiver_name(node.func)
    return ""


class _Scanner(ast.NodeVisitor):
    def __init__(self, module: ast.Module) -> None:
        self.calls: list[AwsCall] = []
        self.module_clients = {
            name: service
            for statement in module.body
            if isinstance(statement, (ast.Assign, ast.AnnAssign))
            for name, service in _assigned_clients(statement, attribute_of=None).items()
        }
        self.class_clients: list[dict[str, str]] = []  # self.<attr> -> service, innermost last
        self.function_clients: list[dict[str, str]] = []  # local name -> service
        self.scope_services: list[set[str]] = []  # every service a scope creates a client for

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.class_clients.append(_assigned_clients(node, attribute_of="self"))
        self.scope_services.append(set(self.class_clients[-1].values()))
        self.generic_visit(node)
        self.class_clients.pop()
        self.scope_services.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.function_clients.append(_assigned_clients(node, attribute_of=None))
        self.scope_services.append(set(self.function_clients[-1].values()))
        self.generic_visit(node)
        self.function_clients.pop()
        self.scope_services.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        # _call(<client>.<method>, ...): the module's wrapper around every boto3 call.
        if isinstance(func, ast.Name) and func.id == "_call" and node.args:
            target = node.args[0]
            making_a_client = isinstance(target, ast.Attribute) and target.attr == "client"
            if isinstance(target, ast.Attribute) and not making_a_client:
                self._record(target.value, target.attr, node)
        # <client>.<method>(...) on a known client, or on anything named like a client.
        elif (
            isinstance(func, ast.Attribute)
            and func.attr not in _NOT_OPERATIONS
            and (
                "client" in _receiver_name(func.value).casefold()
                or self._known_client(func.value) is not None
            )
        ):
            method = func.attr
            if (
                method == "get_paginator"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                method = node.args[0].value
            self._record(func.value, method, node)
        self.generic_visit(node)

    def _record(self, receiver: ast.expr, method: str, node: ast.Call) -> None:
        self.calls.append(AwsCall(self._service_of(receiver), method, node.lineno))

    def _service_of(self, receiver: ast.expr) -> str | None:
        known = self._known_client(receiver)
        if known is not None:
            return known
        # A client passed in from elsewhere: the enclosing function's or class's service, when
        # it creates clients of exactly one service.
        for services in reversed(self.scope_services):
            if len(services) == 1:
                return next(iter(services))
            if services:
                return None
        return None

    def _known_client(self, receiver: ast.expr) -> str | None:
        """The service of a name or self.<attribute> the scopes assign a client to."""
        if (
            isinstance(receiver, ast.Attribute)
            and isinstance(receiver.value, ast.Name)
            and receiver.value.id == "self"
        ):
            for clients in reversed(self.class_clients):
                if receiver.attr in clients:
                    return clients[receiver.attr]
        elif isinstance(receiver, ast.Name):
            for clients in reversed(self.function_clients):
                if receiver.id in clients:
                    return clients[receiver.id]
            if receiver.id in self.module_clients:
                return self.module_clients[receiver.id]
        return None


def scan_boto3_calls(source: str) -> list[AwsCall]:
    """Every boto3 client call in a module's source, with the service its client is for."""
    module = ast.parse(source)
    scanner = _Scanner(module)
    scanner.visit(module)
    return scanner.calls


@cache
def _operations(service: str) -> tuple[str, dict[str, str]]:
    """The IAM prefix of a boto3 service and its operations by client method name (botocore's
    own service model, so that a typo or a non-operation is caught, not guessed at)."""
    model = botocore.session.get_session().get_service_model(service)
    return model.signing_name, {xform_name(name): name for name in model.operation_names}


def iam_actions(calls: list[AwsCall]) -> tuple[set[str], list[str]]:
    """The IAM actions the calls need, and the calls that could not be turned into one."""
    actions: set[str] = set()
    problems: list[str] = []
    for call in calls:
        if call.service is None:
            problems.append(f"line {call.line}: {call.method}: cannot tell which client")
            continue
        prefix, operations = _operations(call.service)
        if call.method not in operations:
            problems.append(f"line {call.line}: {call.method} is no {call.service} operation")
            continue
        actions.add(f"{prefix}:{operations[call.method]}")
    return actions, problems


# --- the template --------------------------------------------------------------------------------


def test_template_is_yaml_with_an_unprivileged_codebuild_project() -> None:
    template = _template()
    assert template["AWSTemplateFormatVersion"] == "2010-09-09"
    project = _one("AWS::CodeBuild::Project")["Properties"]
    environment = project["Environment"]
    assert environment["PrivilegedMode"] is False
    assert environment["Image"] == "aws/codebuild/standard:8.0"
    assert environment["Type"] == "LINUX_CONTAINER"
    assert environment["ComputeType"] == "BUILD_GENERAL1_SMALL"
    variables = {item["Name"]: item["Value"] for item in environment["EnvironmentVariables"]}
    assert variables == {
        "MIRROR_CONFIG": {"Ref": "ConfigPath"},
        "MIRROR_BUILD_TIMEOUT_MINUTES": {"Ref": "BuildTimeoutMinutes"},  # for --deadline
    }
    assert project["TimeoutInMinutes"] == {"Ref": "BuildTimeoutMinutes"}
    # CodeBuild looks for buildspec.yml unless told: the repository's file is buildspec.yaml.
    assert project["Source"]["BuildSpec"] == "buildspec.yaml"
    assert project["Source"]["Type"] == {"Ref": "SourceType"}
    assert project["Source"]["Location"] == {"Ref": "SourceLocation"}
    assert project["SourceVersion"] == {"Ref": "SourceVersion"}


def test_template_parameters() -> None:
    parameters = _template()["Parameters"]
    for name, body in parameters.items():
        assert body.get("Description"), f"parameter {name} has no description"
    assert parameters["SourceType"]["Default"] == "GITHUB"
    assert set(parameters["SourceType"]["AllowedValues"]) == {
        "GITHUB",
        "CODECOMMIT",
        "BITBUCKET",
        "GITHUB_ENTERPRISE",
    }
    assert parameters["SourceVersion"]["Default"] == "main"
    assert parameters["ConfigPath"]["Default"] == "mirror.yaml"
    assert parameters["RepositoryPrefix"]["Default"] == "dockerhub"
    assert parameters["ExtraRepositoryArns"]["Type"] == "CommaDelimitedList"
    assert parameters["ExtraRepositoryArns"]["Default"] == ""
    assert parameters["DockerHubSecretArn"]["Default"] == ""
    assert parameters["SecretKmsKeyArn"]["Default"] == ""
    assert parameters["Schedule"]["Default"] == "cron(0 3 * * ? *)"
    assert parameters["LogRetentionInDays"]["Default"] == 30


def test_logs_go_to_the_templates_log_group() -> None:
    project = _one("AWS::CodeBuild::Project")["Properties"]
    group = project["LogsConfig"]["CloudWatchLogs"]
    assert group["Status"] == "ENABLED"
    assert group["GroupName"] == {"Ref": "LogGroup"}
    log_group = _template()["Resources"]["LogGroup"]["Properties"]
    assert log_group["LogGroupName"] == {"Fn::Sub": "/aws/codebuild/${ProjectName}"}
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionInDays"}


def test_no_iam_action_is_a_wildcard() -> None:
    for node in _walk(_template()):
        assert "NotAction" not in node, f"NotAction grants everything else: {node}"
        if "Action" in node and "Effect" in node:
            for action in _as_list(node["Action"]):
                assert isinstance(action, str), node
                assert "*" not in action, f"wildcard action {action!r}"
                assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), action


def test_only_the_ecr_token_is_granted_on_every_resource() -> None:
    for role in _resources("AWS::IAM::Role"):
        for statement in _statements(role):
            if "*" in _as_list(statement["Resource"]):
                assert _as_list(statement["Action"]) == ["ecr:GetAuthorizationToken"], statement


def test_every_aws_call_in_mirror_is_allowed_to_the_build_role() -> None:
    actions, problems = iam_actions(scan_boto3_calls(AWS_MODULE.read_text()))
    assert not problems, f"mirror/aws.py: calls the scan cannot map to an IAM action: {problems}"
    # The scan must see what mirror is known to do, or it proves nothing.
    assert {
        "ecr:GetAuthorizationToken",
        "ecr:CreateRepository",
        "secretsmanager:GetSecretValue",
    } <= actions
    missing = _missing(actions, _build_role())
    assert not missing, (
        f"mirror/aws.py calls {sorted(missing)}, which deploy/codebuild.yaml's build role does "
        "not allow: add them to the policy (with a comment on what mirror does with them)"
    )


def test_skopeo_registry_actions_are_allowed_on_the_mirror_repositories() -> None:
    role = _build_role()
    assert not _missing(set(SKOPEO_ECR_ACTIONS), role)
    repository_arn = (
        "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}"
        ":repository/${RepositoryPrefix}/*"
    )
    for action in SKOPEO_ECR_ACTIONS:
        statements = [s for s in _statements(role) if action in _as_list(s["Action"])]
        assert statements, action
        for statement in statements:
            assert repository_arn in str(statement["Resource"]), statement


def test_optional_grants_exist_only_when_their_parameter_is_set() -> None:
    conditions = _template()["Conditions"]
    for action, parameter in [
        ("secretsmanager:GetSecretValue", "DockerHubSecretArn"),
        ("kms:Decrypt", "SecretKmsKeyArn"),
    ]:
        items = [item for item in _statement_items(_build_role()) if action in str(item)]
        assert len(items) == 1, action
        assert set(items[0]) == {"Fn::If"}, f"{action} is granted unconditionally"
        condition, when_set, otherwise = items[0]["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"}
        assert when_set["Resource"] == {"Ref": parameter}
        assert {"Ref": parameter} in list(_walk(conditions[condition]))


def test_build_role_covers_logs_and_reports_but_cannot_start_builds() -> None:
    role = _build_role()
    assert not _missing(
        {
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "codebuild:CreateReportGroup",
            "codebuild:CreateReport",
            "codebuild:UpdateReport",
            "codebuild:BatchPutTestCases",
            "codebuild:BatchPutCodeCoverages",
        },
        role,
    )
    # AWS: a build that may start builds could escape the batch restrictions; the batch
    # coordinator has a role of its own.
    granted = _allowed_actions(role)
    for action in ("codebuild:StartBuild", "codebuild:StartBuildBatch", "codebuild:RetryBuild"):
        assert action.casefold() not in granted


def test_batch_builds_have_their_service_role() -> None:
    batch_role = _batch_role()
    assert batch_role != _build_role()
    assert _allowed_actions(batch_role) == {
        "codebuild:startbuild",
        "codebuild:stopbuild",
        "codebuild:retrybuild",
    }
    for statement in _statements(batch_role):
        assert "project/${ProjectName}" in str(statement["Resource"])


def test_daily_schedule_starts_the_batch() -> None:
    schedule = _one("AWS::Scheduler::Schedule")["Properties"]
    assert schedule["ScheduleExpression"] == {"Ref": "Schedule"}
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}  # the string, not YAML's false
    target = schedule["Target"]
    assert target["Arn"] == {
        "Fn::Sub": "arn:${AWS::Partition}:scheduler:::aws-sdk:codebuild:startBuildBatch"
    }
    assert target["Input"] == {"Fn::Sub": '{"ProjectName": "${Project}"}'}
    role = _role_of(target["RoleArn"])
    assert _allowed_actions(role) == {"codebuild:startbuildbatch", "codebuild:startbuild"}
    for statement in _statements(role):
        assert statement["Resource"] == {"Fn::GetAtt": ["Project", "Arn"]}


def test_outputs() -> None:
    outputs = _template()["Outputs"]
    assert outputs["ProjectName"]["Value"] == {"Ref": "Project"}
    assert _role_of(outputs["BuildRoleArn"]["Value"]) == _build_role()
    assert outputs["ScheduleName"]["Value"] == {"Ref": "DailySchedule"}
    assert outputs["AlertTopicArn"]["Value"] == {"Ref": "AlertTopic"}


# --- alerts --------------------------------------------------------------------------------------

# The build state change event as CodeBuild's "Build notifications input format reference"
# documents it (trimmed to what the rule and its input transformer read).
_BUILD_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "c030038d-8c4d-6141-9545-00ff7b7153EX",
    "detail-type": "CodeBuild Build State Change",
    "source": "aws.codebuild",
    "account": "123456789012",
    "time": "2017-09-01T16:14:28Z",
    "region": "us-west-2",
    "detail": {
        "build-status": "FAILED",
        "project-name": "mirror",
        "build-id": "arn:aws:codebuild:us-west-2:123456789012:build/mirror:8745a7a9-c340-456a",
        "current-phase": "COMPLETED",
        "current-phase-context": "[: ]",
        "version": "1",
        "additional-information": {
            "timeout-in-minutes": 120,
            "build-complete": True,
            "logs": {
                "group-name": "/aws/codebuild/mirror",
                "stream-name": "8745a7a9-c340-456a",
                "deep-link": "https://console.aws.amazon.com/cloudwatch/home?region=us-west-2#logEvent:group=/aws/codebuild/mirror;stream=8745a7a9-c340-456a",
            },
        },
    },
}


def _matches(pattern: Any, event: Any) -> bool:
    """EventBridge's matching for the forms the template uses: a list of allowed values, or
    an object of fields each of which must match."""
    if isinstance(pattern, list):
        return event in pattern
    return isinstance(event, dict) and all(
        key in event and _matches(value, event[key]) for key, value in pattern.items()
    )


def _event_pattern() -> Any:
    """The rule's pattern, the project's name filled in as CloudFormation would."""
    rule = _template()["Resources"]["BuildFailedRule"]["Properties"]
    text = json.dumps(rule["EventPattern"]).replace('{"Ref": "Project"}', '"mirror"')
    return json.loads(text)


def _with(**detail: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(json.dumps(_BUILD_EVENT))
    event["detail"].update(detail)
    return event


@pytest.mark.parametrize(
    ("event", "alerts"),
    [
        (_with(**{"build-status": "FAILED"}), True),
        (_with(**{"build-status": "FAULT"}), True),  # CodeBuild's own error
        (_with(**{"build-status": "TIMED_OUT"}), True),
        (_with(**{"build-status": "STOPPED"}), True),
        (_with(**{"build-status": "SUCCEEDED"}), False),
        (_with(**{"build-status": "IN_PROGRESS"}), False),
        (_with(**{"build-status": "FAILED", "project-name": "someone-elses"}), False),
    ],
)
def test_the_rule_matches_failed_timed_out_and_stopped_builds_of_the_project(
    event: dict[str, Any], alerts: bool
) -> None:
    assert _matches(_event_pattern(), event) is alerts


def test_the_alert_message_is_one_readable_line() -> None:
    rule = _template()["Resources"]["BuildFailedRule"]["Properties"]
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Ref": "AlertTopic"}
    transformer = target["InputTransformer"]
    message = transformer["InputTemplate"]
    # every placeholder has a path, every path is used, and each path is in the event
    assert set(re.findall(r"<([a-z]+)>", message)) == set(transformer["InputPathsMap"])
    for name, path in transformer["InputPathsMap"].items():
        value: Any = _BUILD_EVENT
        for step in path.removeprefix("$.").split("."):
            value = value[step]
        message = message.replace(f"<{name}>", str(value))
    assert json.loads(message) == (
        "mirror: build arn:aws:codebuild:us-west-2:123456789012:build/mirror:8745a7a9-c340-456a "
        "of project mirror ended FAILED at 2017-09-01T16:14:28Z (phase COMPLETED). Its log: "
        + _BUILD_EVENT["detail"]["additional-information"]["logs"]["deep-link"]
    )


def test_the_topic_policy_lets_only_the_rule_and_the_projects_alarms_publish() -> None:
    policy = _one("AWS::SNS::TopicPolicy")["Properties"]
    assert policy["Topics"] == [{"Ref": "AlertTopic"}]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert set(statements) == {"BuildStateChangesFromEventBridge", "AlarmsFromCloudWatch"}
    for statement in statements.values():
        assert statement["Effect"] == "Allow"
        assert statement["Action"] == "sns:Publish"
        assert statement["Resource"] == {"Ref": "AlertTopic"}
    events = statements["BuildStateChangesFromEventBridge"]
    assert events["Principal"] == {"Service": "events.amazonaws.com"}
    assert events["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["BuildFailedRule", "Arn"]}}
    }
    alarms = statements["AlarmsFromCloudWatch"]
    assert alarms["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert alarms["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    alarm_arns = alarms["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    assert alarm_arns.endswith(":alarm:${ProjectName}-*")
    alarm = _one("AWS::CloudWatch::CompositeAlarm")["Properties"]
    assert alarm["AlarmName"] == {"Fn::Sub": "${ProjectName}-no-good-run"}  # within the policy


def test_the_email_subscription_exists_only_with_an_address() -> None:
    subscription = _template()["Resources"]["AlertEmailSubscription"]
    assert subscription["Condition"] == "HasAlertEmail"
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": "AlertTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "AlertEmail"},
    }
    assert _template()["Conditions"]["HasAlertEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlertEmail"}, ""]}]
    }
    pattern = re.compile(_template()["Parameters"]["AlertEmail"]["AllowedPattern"])
    assert [bool(pattern.fullmatch(text)) for text in ("", "ops@example.com", "ops", "a b@c")] == [
        True,
        True,
        False,
        False,
    ]


def _alarm_fires(alarm: dict[str, Any], hourly: list[float | None], hours: int) -> bool:
    """CloudWatch's evaluation of one shard's alarm at the end of `hourly` (one Maximum per
    hour, None for an hour without data): M of the last N periods breaching, missing data
    treated as the alarm says."""
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["TreatMissingData"] == "breaching"
    window = hourly[-hours:]

    def breaching(value: float | None) -> bool:
        return value is None or value < alarm["Threshold"]

    return sum(map(breaching, window)) >= hours  # DatapointsToAlarm == EvaluationPeriods


def _shard_alarms() -> dict[str, dict[str, Any]]:
    """Each shard's alarm, by the shard (K/N) its dimension names."""
    found = {}
    for name, body in _resources("AWS::CloudWatch::Alarm").items():
        (dimension,) = body["Properties"]["Dimensions"]
        assert dimension["Name"] == "Shard"
        assert body["Condition"] == "HasGoodRunAlarm"
        found[dimension["Value"]] = {**body["Properties"], "Name": name}
    return found


def test_there_is_an_alarm_for_each_shard_of_the_buildspecs_batch_matrix() -> None:
    buildspec = yaml.safe_load((ROOT / "buildspec.yaml").read_text())
    matrix = buildspec["batch"]["build-matrix"]["dynamic"]["env"]["variables"]["MIRROR_SHARD"]
    shards = _shard_alarms()
    assert sorted(shards) == sorted(matrix)
    composite = _template()["Resources"]["GoodRunAlarm"]
    assert composite["Condition"] == "HasGoodRunAlarm"
    rule = composite["Properties"]["AlarmRule"]["Fn::Sub"]
    names = [shards[shard]["Name"] for shard in matrix]
    assert rule == " OR ".join(f'ALARM("${{{name}}}")' for name in names)


Hourly = list[float | None]


def _fires(alarms: dict[str, dict[str, Any]], hourly: Hourly, first: Hourly | None = None) -> bool:
    """The composite: any shard's alarm in ALARM, each shard's runs `hourly` (the first
    shard's `first`, when given)."""
    n = _template()["Parameters"]["HoursWithoutGoodRun"]["Default"]
    one = min(alarms)
    return any(
        _alarm_fires(alarms[shard], first if first and shard == one else hourly, n)
        for shard in alarms
    )


def test_the_good_run_alarm_reads_what_mirror_prints_and_fires_only_after_a_day_without_one() -> (
    None
):
    from mirror import metrics
    from mirror.report import Report

    hours = _template()["Parameters"]["HoursWithoutGoodRun"]
    composite = _template()["Resources"]["GoodRunAlarm"]["Properties"]
    assert composite["AlarmActions"] == composite["OKActions"] == [{"Ref": "AlertTopic"}]
    alarms = _shard_alarms()
    for shard, alarm in alarms.items():
        assert (
            alarm["EvaluationPeriods"]
            == alarm["DatapointsToAlarm"]
            == {"Ref": "HoursWithoutGoodRun"}
        )
        assert alarm["Period"] * hours["MaxValue"] <= 604800  # CloudWatch: 7 days at most
        assert "AlarmActions" not in alarm  # the composite tells the topic
        assert (alarm["Statistic"], alarm["Threshold"]) == ("Maximum", 1)
        # The metric is one mirror prints, with exactly the alarm's dimension and value.
        (line,) = metrics.emf(Report(outcomes=[], exit_code=0), shard=shard)
        document = json.loads(line)
        assert alarm["Namespace"] == metrics.NAMESPACE
        assert any(
            directive["Dimensions"] == [["Shard"]]
            and alarm["MetricName"] in [m["Name"] for m in directive["Metrics"]]
            for directive in document["_aws"]["CloudWatchMetrics"]
        )
        assert (document["Shard"], document[alarm["MetricName"]]) == (shard, 1)
    # Nightly runs at 03:00: a good night, then failures or silence.
    quiet = [None] * 23
    good = [1.0, *quiet]
    assert not _fires(alarms, good * 3)
    assert not _fires(alarms, [*good, 0.0])  # the next night fails: not yet
    assert not _fires(alarms, [*good, 0.0, None])  # 25 h
    assert _fires(alarms, [*good, 0.0, None, None])  # 26 h: fires
    assert _fires(alarms, [None] * 26)  # a new stack, before its first good run
    # Shards that end in different hours, each good: no alarm.
    assert not _fires(alarms, [*good, None, 1.0], first=[*good, 1.0, None])
    # One shard failing every hour for a day while the others succeed: it fires.
    assert _fires(alarms, [*good, *good, 1.0, None], first=[*good, *([0.0] * 26)])


def _cfn_lint() -> list[str]:
    if importlib.util.find_spec("cfnlint") is None:
        pytest.fail("cfn-lint is not installed: pip install -e '.[test]'")
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (folder / "cfn-lint").is_file():
            return [str(folder / "cfn-lint")]
    return [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]


def test_cfn_lint_passes() -> None:
    done = subprocess.run(
        [*_cfn_lint(), "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"cfn-lint:\n{done.stdout}{done.stderr}"


# --- the scanner itself --------------------------------------------------------------------------

_SAMPLE = """
import boto3

class Ecr:
    def __init__(self, *, region, client=None):
        self._client = client or boto3.client("ecr", region_name=region)

    def token(self):
        return _call(self._client.get_authorization_token, "get a token")

    def drop(self, name):
        return _call(self._client.delete_repository, "delete", repositoryName=name)

    def images(self, name):
        pages = self._client.get_paginator("describe_images").paginate(repositoryName=name)
        return self._client.list_images(repositoryName=name), pages

def secret_login(secret_id, *, region, client=None):
    client = client or boto3.client("secretsmanager", region_name=region)
    return _call(client.get_secret_value, "read", SecretId=secret_id)

def rotate(secret_id):
    sm_client = boto3.client("secretsmanager")
    sm_client.rotate_secret(SecretId=secret_id)

class Replication:
    def __init__(self):
        self._ecr = boto3.session.Session().client("ecr")

    def setup(self, rules):
        self._ecr.put_replication_configuration(replicationConfiguration=rules)

def unknown(thing):
    return _call(thing.get_authorization_token, "who knows")
"""
_UNKNOWN_LINE = 1 + _SAMPLE.splitlines().index(
    '    return _call(thing.get_authorization_token, "who knows")'
)


def test_scanner_finds_new_calls_and_the_policy_check_catches_them() -> None:
    calls = scan_boto3_calls(_SAMPLE)
    actions, problems = iam_actions(calls)
    assert actions == {
        "ecr:GetAuthorizationToken",
        "ecr:DeleteRepository",
        "ecr:DescribeImages",
        "ecr:ListImages",
        "secretsmanager:GetSecretValue",
        "secretsmanager:RotateSecret",
        "ecr:PutReplicationConfiguration",
    }
    # A call on a client the scan cannot place is reported, not dropped.
    assert problems == [f"line {_UNKNOWN_LINE}: get_authorization_token: cannot tell which client"]
    # The calls the template does not allow are exactly what the real test would report.
    assert _missing(actions, _build_role()) == {
        "ecr:DeleteRepository",
        "ecr:DescribeImages",
        "ecr:ListImages",
        "ecr:PutReplicationConfiguration",
        "secretsmanager:RotateSecret",
    }


def test_scanner_rejects_what_is_no_operation() -> None:
    source = 'import boto3\nclient = boto3.client("ecr")\nclient.get_authorisation_token()\n'
    actions, problems = iam_actions(scan_boto3_calls(source))
    assert actions == set()
    assert problems == ["line 3: get_authorisation_token is no ecr operation"]


# --- systemd and cron ----------------------------------------------------------------------------


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((DEPLOY / name).read_text(), source=name)
    return parser


SYNC_COMMAND = (
    "/usr/local/bin/mirror sync --config /etc/mirror/mirror.yaml "
    "--report /var/lib/mirror/report.json --lock-file /var/lib/mirror/sync.lock "
    "--deadline 1h55m"
)
CRON_LINE = (
    "17 3 * * * mirror /usr/local/bin/mirror sync -c /etc/mirror/mirror.yaml "
    "--report /var/lib/mirror/report.json --lock-file /var/lib/mirror/sync.lock --quiet"
)


def test_systemd_units(tmp_path: Path) -> None:
    service = _unit("mirror.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == SYNC_COMMAND
    assert service["User"] == "mirror"
    assert service["DynamicUser"] == "no"
    assert service["StateDirectory"] == "mirror"
    assert "75" in service["SuccessExitStatus"].split()
    assert service["TimeoutStartSec"] == "2h"
    assert service["EnvironmentFile"] == "-/etc/mirror/env"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes"
    assert service["PrivateTmp"] == "yes"
    assert "/var/lib/mirror" in service["ReadWritePaths"].split()

    timer = _unit("mirror.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* 03:00:00"
    assert timer["Timer"]["RandomizedDelaySec"] == "15m"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["Unit"] == "mirror.service"
    assert timer["Install"]["WantedBy"] == "timers.target"

    analyze = shutil.which("systemd-analyze")
    if analyze:  # systemd's own check, where systemd is installed
        stand_in = tmp_path / "mirror"
        stand_in.write_text("#!/bin/sh\nexit 0\n")
        stand_in.chmod(0o755)
        text = (DEPLOY / "mirror.service").read_text()
        (tmp_path / "mirror.service").write_text(
            text.replace("/usr/local/bin/mirror", str(stand_in))
        )
        shutil.copy(DEPLOY / "mirror.timer", tmp_path / "mirror.timer")
        done = subprocess.run(
            [analyze, "verify", str(tmp_path / "mirror.service"), str(tmp_path / "mirror.timer")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert not [line for line in output.splitlines() if "mirror." in line], output


def test_crontab_example() -> None:
    text = (DEPLOY / "crontab.example").read_text()
    jobs = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert jobs == [CRON_LINE]
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "75" in comments
    assert "flock" in comments


@pytest.mark.parametrize("command", [SYNC_COMMAND, CRON_LINE.split(" mirror ", 1)[1]])
def test_deployed_command_lines_use_options_mirror_has(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mirror", "sync", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    offered = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", done.stdout))
    used = [word for word in command.split() if word.startswith("-")]
    assert used
    assert not [word for word in used if word not in offered], done.stdout
