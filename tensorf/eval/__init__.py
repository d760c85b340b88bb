"""Evaluation on held-out views: PSNR, SSIM, LPIPS, and the renders that go with them."""
