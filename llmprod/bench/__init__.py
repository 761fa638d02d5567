"""Load tests of OpenAI-compatible servers: TTFT, inter-token latency and throughput by concurrency."""
