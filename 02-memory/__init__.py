"""mlot.memory: the working -> episodic -> semantic memory cascade, exact top-k retrieval, memory graph and GNN."""
from mlot.memory.cascade import MemoryCascade
from mlot.memory.chunking import ChunkBuffer, pool_chunks
from mlot.memory.episodic import EpisodicMemory
from mlot.memory.gnn import MemoryGNN
from mlot.memory.graph import MemoryGraph
from mlot.memory.kernels import topk_cosine
from mlot.memory.semantic import SemanticMemory
from mlot.memory.working import WorkingMemory

__all__ = ["ChunkBuffer", "EpisodicMemory", "MemoryCascade", "MemoryGNN", "MemoryGraph", "SemanticMemory",
           "WorkingMemory", "pool_chunks", "topk_cosine"]
