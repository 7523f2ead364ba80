#!/bin/sh
# The memory recipe: from nothing to a model that recalls a pass key 8 working windows back.
#
#   sh 06-evaluation/memory_recipe.sh [OUTPUT_DIR [train.py options, e.g. --max_steps 2000]]
#                                                          (default OUTPUT_DIR: runs/memory_recipe)
#
# 1. a corpus of memory-task documents (03-tokenization/memory_training_corpus.py; case seeds >= 10^9, apart
#    from the benchmark's), 2. its tokenizer and token files, 3. training with
#    05-training/configs/memory_recipe.json, 4. recall practice with the loss on the answers only
#    (train.py --stage recall, 05-training/recall_stage.py), 5. the memory benchmarks of the result (table on the terminal,
#    JSON beside it). An existing OUTPUT_DIR is refused by each step rather than overwritten.
#
# BLAS runs single-threaded: this model's matrices are small, and on a busy machine BLAS
# threads spin against each other (measured: 5x slower evaluation at load 11 on 2 cores).
set -eu
OUT=$(mkdir -p "${1:-runs/memory_recipe}" && cd "${1:-runs/memory_recipe}" && pwd)
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
python 03-tokenization/memory_training_corpus.py --output "$OUT/memory_tasks.jsonl" --no_progress
python 03-tokenization/tokenize_data.py --input "$OUT/memory_tasks.jsonl" --vocab_size 4096 --output "$OUT/tokenized"
python 05-training/train.py --model_config 05-training/configs/memory_recipe.json --dataset "$OUT/tokenized" \
    --checkpoint_dir "$OUT/checkpoints" "$@"
python 05-training/train.py --stage recall --base "$OUT/checkpoints/latest_checkpoint.pt" \
    --checkpoint_dir "$OUT/recall" --no_progress
python 06-evaluation/memory_benchmarks.py --checkpoint "$OUT/recall/latest_checkpoint.pt" \
    --report "$OUT/memory_benchmarks.json"
