"""One site's process in a loopback run: `python -m gridtune.federated.node --server HOST:PORT
--job JOB.json --site INDEX` connects to the Flower server and answers its rounds until the
server ends the run."""

from __future__ import annotations

import argparse
import json
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--site", required=True, type=int)
    args = parser.parse_args(argv)
    import torch
    from flwr.client import start_client

    from gridtune.federated.client import Job, make_client

    torch.set_num_threads(1)
    job = Job.from_dict(json.loads(open(args.job).read()))
    job.site(args.site)  # read the data before connecting: a round's time is training only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start_client(server_address=args.server, client=make_client(job, args.site), insecure=True,
                     max_retries=20, max_wait_time=60.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
