"""A test kubelet's PodResources endpoint: gRPC (grpcio) on a unix socket, serving
v1.PodResourcesLister/List from a JSON file read at every call, so a test can change
the assignment while the agent runs.

Usage: server.py SOCKET ASSIGNMENTS_JSON
The JSON: [{"namespace": ..., "pod": ..., "containers": [{"name": ...,
"devices": [{"resource_name": "nvidia.com/gpu", "device_ids": ["GPU-..."]}]}]}]
The messages come from api.proto, compiled here with grpc_tools.protoc.
"""

import json
import os
import sys
import tempfile
import time
from concurrent import futures

import grpc
from grpc_tools import protoc

here = os.path.dirname(os.path.abspath(__file__))
out = tempfile.mkdtemp()
if protoc.main(["protoc", f"-I{here}", f"--python_out={out}", os.path.join(here, "api.proto")]) != 0:
    sys.exit("protoc failed on api.proto")
sys.path.insert(0, out)
import api_pb2  # noqa: E402


def list_pods(request_bytes, context):
    with open(sys.argv[2]) as f:
        pods = json.load(f)
    resp = api_pb2.ListPodResourcesResponse()
    for p in pods:
        pr = resp.pod_resources.add(name=p["pod"], namespace=p["namespace"])
        for c in p["containers"]:
            cr = pr.containers.add(name=c["name"], cpu_ids=[2, 3])
            for d in c["devices"]:
                dev = cr.devices.add(resource_name=d["resource_name"], device_ids=d["device_ids"])
                dev.topology.nodes.add(ID=0)
    return resp


handler = grpc.method_handlers_generic_handler(
    "v1.PodResourcesLister",
    {
        "List": grpc.unary_unary_rpc_method_handler(
            list_pods,
            request_deserializer=api_pb2.ListPodResourcesRequest.FromString,
            response_serializer=api_pb2.ListPodResourcesResponse.SerializeToString,
        )
    },
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"unix://{sys.argv[1]}")
server.start()
print("serving", flush=True)
while True:
    time.sleep(3600)
