"""anyecg_edge/signal"""
