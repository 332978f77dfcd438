"""anyecg_edge/labs"""
