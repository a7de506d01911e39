"""Models for the deployment tests, reachable as factory specs `models_for_deploy:NAME`."""
import torch


def tiny_bert():
    """A 2-layer BERT (a transformers PreTrainedModel) with random weights: save_pretrained's path."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = BertModel(config, add_pooling_layer=False).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (1, 16), generator=gen)
    return model, (ids, torch.ones(1, 16, dtype=torch.long))


class SmallConvNet(torch.nn.Module):
    """Wide enough for a latency budget on a GPU target, where a tiny net is all launch cost."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU())
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def small_convnet():
    torch.manual_seed(0)
    return SmallConvNet().eval(), (torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)),)
