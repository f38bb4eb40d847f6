# The README's commands. Every target builds with the committed Cargo.lock.
.PHONY: test lint fmt clippy template checkov openapi fuzz bench bench-query build local publish

# The whole test suite: unit tests plus integration tests against DynamoDB Local and moto,
# which the test harness installs (into .local/) and starts itself, and the console's
# end-to-end test in Debian's Chromium (installed with apt-get when missing).
test:
	bash .ci/chromium
	cargo test --workspace --locked

lint: fmt clippy template checkov openapi

fmt:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

template:
	bash .ci/lint-template

checkov:
	bash .ci/checkov

openapi:
	bash .ci/check-openapi

# Schemathesis against the local stack, from openapi.yaml (starts and stops the stack itself).
fuzz:
	bash .ci/fuzz-api

bench:
	cargo bench -p tally-shared --bench validate --locked

# Latency and DynamoDB cost of every query route over a month of seeded history.
bench-query:
	cargo bench -p tally-local --bench query --locked

build:
	cargo build --workspace --release --locked

# The local stack: DynamoDB Local + moto, the functions under a Lambda Runtime API emulator, the
# HTTP API on 127.0.0.1:3000, the SQS mapping and schedules. Ctrl-C stops everything.
local:
	cargo run --locked -p tally-local -- up

publish:
	cargo run --locked -p tally-local -- publish --rate 200 --duration 60
