"""Phased TTT (eval.ttt.mode=phased, #1855): per-document LoRA adapters scored then trained
chunk by chunk (`ttt`), batched over documents by a plan fixed up front (`plan`), with the
LoRA forward of the GPT (`lora`)."""
