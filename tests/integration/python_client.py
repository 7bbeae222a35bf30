"""Python interoperability client for airlockd: calls every public RPC over mutual TLS and prints one JSON object.

Run by tests/integration/python_client_test.cc (which asserts on the JSON); also usable by hand:

  /usr/bin/python3 tests/integration/python_client.py --port 8443 --ca pki/ca.crt \
      --cert pki/alice.crt --key pki/alice.key --denied-cert pki/mallory.crt \
      --denied-key pki/mallory.key --proto-dir proto --out-dir /tmp/stubs

Stubs are generated at run time from the repository's .proto files into --out-dir, with
grpc_tools.protoc when its bundled protoc understands the files (proto3 `optional` needs
protoc >= 3.12; Debian 12's python3-grpc-tools bundles 3.5.1), else with the system protoc and
grpc_python_plugin. Exit codes: 0 = the JSON object was printed (individual checks may still have
failed; the caller decides), 77 = a dependency is missing (grpcio, protobuf, or any protoc),
1 = anything else before the JSON could be written.
"""

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import traceback

EXIT_MISSING_DEPENDENCY = 77

try:
    import grpc
    import google.protobuf
except ImportError as e:  # pragma: no cover - depends on the host
    print(f"python_client.py: missing dependency: {e}", file=sys.stderr)
    sys.exit(EXIT_MISSING_DEPENDENCY)

HEALTH_PACKAGE = "airlock_pyclient_health"  # not "grpc.health.v1": that would collide with grpcio's package
CALL_TIMEOUT = 60.0


def generate_stubs(proto_dir, out_dir):
    """Generates inference_pb2(_grpc) and health_pb2(_grpc) into out_dir; returns a description of the generator."""
    os.makedirs(out_dir, exist_ok=True)
    # health.proto is compiled from a copy under another directory so its Python module is not
    # grpc.health.v1.health_pb2; the proto package (and so the method names on the wire) stays
    # grpc.health.v1.
    src_dir = os.path.join(out_dir, "proto_src")
    os.makedirs(os.path.join(src_dir, "airlock", "v1"), exist_ok=True)
    os.makedirs(os.path.join(src_dir, HEALTH_PACKAGE), exist_ok=True)
    shutil.copyfile(os.path.join(proto_dir, "airlock", "v1", "inference.proto"),
                    os.path.join(src_dir, "airlock", "v1", "inference.proto"))
    shutil.copyfile(os.path.join(proto_dir, "grpc", "health", "v1", "health.proto"),
                    os.path.join(src_dir, HEALTH_PACKAGE, "health.proto"))
    files = ["airlock/v1/inference.proto", f"{HEALTH_PACKAGE}/health.proto"]
    gen_dir = os.path.join(out_dir, "gen")
    os.makedirs(gen_dir, exist_ok=True)
    notes = []

    try:
        from grpc_tools import protoc as grpc_tools_protoc
        args = ["grpc_tools.protoc", f"-I{src_dir}", f"--python_out={gen_dir}", f"--grpc_python_out={gen_dir}"]
        # grpc_tools.protoc writes its diagnostics straight to fd 2; they go to our stderr.
        rc = grpc_tools_protoc.main(args + files)
        if rc == 0:
            return "grpc_tools.protoc", gen_dir
        notes.append(f"grpc_tools.protoc failed with {rc} (its bundled protoc is too old for proto3 optional?)")
    except ImportError as e:
        notes.append(f"grpc_tools unavailable: {e}")

    protoc = shutil.which("protoc", path="/usr/bin:/usr/local/bin")
    plugin = shutil.which("grpc_python_plugin", path="/usr/bin:/usr/local/bin")
    if protoc is None or plugin is None:
        print("python_client.py: missing dependency: no usable protoc (" + "; ".join(notes) + ")", file=sys.stderr)
        sys.exit(EXIT_MISSING_DEPENDENCY)
    result = subprocess.run([protoc, f"-I{src_dir}", f"--python_out={gen_dir}", f"--grpc_python_out={gen_dir}",
                             f"--plugin=protoc-gen-grpc_python={plugin}"] + files,
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{protoc} failed: {result.stderr}")
    version = subprocess.run([protoc, "--version"], capture_output=True, text=True).stdout.strip()
    return f"{protoc} ({version}) + {plugin}; " + "; ".join(notes), gen_dir


def read(path):
    with open(path, "rb") as f:
        return f.read()


def secure_channel(port, ca, cert, key):
    credentials = grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key),
                                               certificate_chain=read(cert))
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials,
                               options=[("grpc.ssl_target_name_override", "localhost")])


def rpc_error(e):
    return {"ok": False, "code": e.code().name, "details": e.details()}


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field_number, payload):
    return varint((field_number << 3) | 2) + varint(len(payload)) + payload


def raw_generate_request(model, prompt_bytes, max_tokens):
    """A serialized airlock.v1.GenerateRequest built by hand, so the prompt can hold any bytes."""
    return (length_delimited(1, model.encode()) + length_delimited(2, prompt_bytes) +
            varint((3 << 3) | 0) + varint(max_tokens) +
            # sampling { temperature: 0 } (field 4, message; temperature is field 1, fixed32)
            length_delimited(4, varint((1 << 3) | 5) + b"\x00\x00\x00\x00"))


def collect_stream(responses, pb):
    """Reads a GenerateStreamResponse stream: concatenated text, piece count, and the final message."""
    out = {"ok": True, "text": "", "pieces": 0, "token_ids": [], "done": False, "messages_after_done": 0}
    for message in responses:
        if out["done"]:
            out["messages_after_done"] += 1
        which = message.WhichOneof("event")
        if which == "piece":
            out["pieces"] += 1
            out["text"] += message.piece.text
            out["token_ids"].extend(message.piece.token_ids)
        elif which == "done":
            out["done"] = True
            out["request_id"] = message.done.request_id
            out["model"] = message.done.model
            out["prompt_tokens"] = message.done.usage.prompt_tokens
            out["completion_tokens"] = message.done.usage.completion_tokens
            out["stop_reason"] = pb.StopReason.Name(message.done.stop_reason)
    return out


def run_checks(args, pb, pb_grpc, health_pb, health_grpc):
    results = {}

    def check(name, fn):
        try:
            results[name] = fn()
        except grpc.RpcError as e:
            results[name] = rpc_error(e)
        except Exception as e:  # recorded, not fatal: the remaining checks still run
            results[name] = {"ok": False, "exception": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc()}

    channel = secure_channel(args.port, args.ca, args.cert, args.key)
    stub = pb_grpc.InferenceStub(channel)

    def greedy(prompt, max_tokens, model=args.model):
        request = pb.GenerateRequest(model=model, prompt=prompt, max_tokens=max_tokens)
        request.sampling.temperature = 0.0
        return request

    def list_models():
        response = stub.ListModels(pb.ListModelsRequest(), timeout=CALL_TIMEOUT)
        return {"ok": True, "models": [{"name": m.name, "architecture": m.architecture,
                                        "chat_template": m.chat_template, "parameters": m.parameters,
                                        "context_length": m.context_length} for m in response.models]}

    def tokenize():
        response = stub.Tokenize(pb.TokenizeRequest(model=args.model, text="Hello world", add_special=True),
                                 timeout=CALL_TIMEOUT)
        return {"ok": True, "token_ids": list(response.token_ids), "pieces": list(response.pieces)}

    def generate():
        response = stub.Generate(greedy(args.prompt, args.max_tokens), timeout=CALL_TIMEOUT)
        return {"ok": True, "text": response.text, "token_ids": list(response.token_ids),
                "request_id": response.request_id, "model": response.model,
                "prompt_tokens": response.usage.prompt_tokens,
                "completion_tokens": response.usage.completion_tokens,
                "stop_reason": pb.StopReason.Name(response.stop_reason)}

    def generate_stream():
        return collect_stream(stub.GenerateStream(greedy(args.prompt, args.max_tokens), timeout=CALL_TIMEOUT), pb)

    def chat_request():
        request = pb.ChatRequest(model=args.chat_model, max_tokens=8)
        request.sampling.temperature = 0.0
        request.messages.add(role="system", content="You tell short stories.")
        request.messages.add(role="user", content="Tell me a story")
        return request

    def chat_stream():
        return collect_stream(stub.ChatStream(chat_request(), timeout=CALL_TIMEOUT), pb)

    def chat_unary():
        response = stub.Chat(chat_request(), timeout=CALL_TIMEOUT)
        return {"ok": True, "text": response.text, "completion_tokens": response.usage.completion_tokens}

    def health():
        health_stub = health_grpc.HealthStub(channel)
        response = health_stub.Check(health_pb.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT)
        return {"ok": True, "status": health_pb.HealthCheckResponse.ServingStatus.Name(response.status)}

    def permission_denied():
        denied = secure_channel(args.port, args.ca, args.denied_cert, args.denied_key)
        try:
            response = pb_grpc.InferenceStub(denied).Generate(greedy("Hi", 2), timeout=CALL_TIMEOUT)
            return {"ok": True, "text": response.text}
        finally:
            denied.close()

    def invalid_argument():
        response = stub.Generate(greedy("Hi", 0), timeout=CALL_TIMEOUT)  # max_tokens must be >= 1
        return {"ok": True, "text": response.text}

    raw_generate = channel.unary_unary("/airlock.v1.Inference/Generate", request_serializer=None,
                                       response_deserializer=None)

    def raw_valid_control():
        # The same hand-built encoding with a valid prompt must succeed, so a refusal of the invalid one
        # is about the UTF-8 and not about the encoding.
        raw = raw_generate(raw_generate_request(args.model, b"Once upon a time", 4), timeout=CALL_TIMEOUT)
        response = pb.GenerateResponse.FromString(raw)
        return {"ok": True, "text": response.text, "completion_tokens": response.usage.completion_tokens}

    def raw_invalid_utf8():
        raw = raw_generate(raw_generate_request(args.model, b"Once \xff\xfe upon \xc3\x28 a time", 4),
                           timeout=CALL_TIMEOUT)
        return {"ok": True, "response_bytes": len(raw)}

    def after_invalid_utf8():
        # The daemon keeps serving: the same channel and a fresh one both work.
        same = stub.Generate(greedy("Once upon a time", 4), timeout=CALL_TIMEOUT)
        fresh_channel = secure_channel(args.port, args.ca, args.cert, args.key)
        try:
            fresh = pb_grpc.InferenceStub(fresh_channel).Generate(greedy("Once upon a time", 4),
                                                                  timeout=CALL_TIMEOUT)
        finally:
            fresh_channel.close()
        return {"ok": True, "same_channel_text": same.text, "fresh_channel_text": fresh.text}

    check("list_models", list_models)
    check("tokenize", tokenize)
    check("generate", generate)
    check("generate_stream", generate_stream)
    check("chat_stream", chat_stream)
    check("chat", chat_unary)
    check("health", health)
    check("permission_denied", permission_denied)
    check("invalid_argument", invalid_argument)
    check("raw_valid_control", raw_valid_control)
    check("raw_invalid_utf8", raw_invalid_utf8)
    check("after_invalid_utf8", after_invalid_utf8)
    channel.close()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True, help="CA that signed the daemon's certificate")
    parser.add_argument("--cert", required=True, help="client certificate with inference roles")
    parser.add_argument("--key", required=True)
    parser.add_argument("--denied-cert", required=True, help="client certificate of the same CA with no roles")
    parser.add_argument("--denied-key", required=True)
    parser.add_argument("--proto-dir", required=True, help="the repository's proto/ directory")
    parser.add_argument("--out-dir", required=True, help="where the generated stubs go")
    parser.add_argument("--model", default="stories")
    parser.add_argument("--chat-model", default="stories-chat")
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()

    generator, gen_dir = generate_stubs(args.proto_dir, args.out_dir)
    sys.path.insert(0, gen_dir)
    importlib.invalidate_caches()
    pb = importlib.import_module("airlock.v1.inference_pb2")
    pb_grpc = importlib.import_module("airlock.v1.inference_pb2_grpc")
    health_pb = importlib.import_module(f"{HEALTH_PACKAGE}.health_pb2")
    health_grpc = importlib.import_module(f"{HEALTH_PACKAGE}.health_pb2_grpc")

    results = run_checks(args, pb, pb_grpc, health_pb, health_grpc)
    results["environment"] = {"python": sys.version.split()[0], "grpcio": grpc.__version__,
                              "protobuf": google.protobuf.__version__, "stub_generator": generator}
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
