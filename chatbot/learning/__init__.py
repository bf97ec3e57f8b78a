"""The learning loop: suggested FAQs from agents' answers, and content-gap clustering.

``transcript`` reads the conversation log into the questions the bot failed on and the agents'
answers to them; ``suggestions`` keeps the review queue (merging near-duplicates, linking to an
FAQ that missed a phrasing, approve, reject); ``knowledge`` turns approved suggestions into
documents for the index; ``gaps`` clusters unanswered questions into topics; ``loop`` wires all
of it to the running service (resolved hand-overs in, re-index after approval out).
"""
