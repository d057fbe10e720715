#!/bin/bash
# Runs the real-frames rows one after another in the background (each resumes from its state
# file when re-run), then writes the report:  nohup nice bench/real_queue.sh &
cd "$(dirname "$0")/.." && exec .venv/bin/python -m bench.real_frames --rows full target_only source_only ct_dyce >> runs/real_frames.log 2>&1
