"""An app on the tftl runtime: personalise a model on the user's photos, survive being killed,
then classify with the personal model.
    python examples/app_client.py model.tflite my_photos/ work/ photo.jpg ...
"""
import os
import sys

from tftl.runtime import evaluate
from tftl.runtime.checkpoint import CHECKPOINT_NAME
from tftl.runtime.loop import Schedule, Trainer
from tftl.runtime.modelfile import save_model
from tftl.runtime.session import Session


def personalise(model_path, photos_dir, work_dir, epochs=3):
    """Fine-tune on photos_dir (one folder per label); resumes where a killed run stopped."""
    session = Session(model_path)
    trainer = Trainer(session, cache_dir=work_dir, seed=0, quiet=True)
    checkpoint = os.path.join(work_dir, CHECKPOINT_NAME)
    state = trainer.resume(checkpoint) if os.path.exists(checkpoint) else None
    result = trainer.fit(photos_dir, epochs, schedule=Schedule(), state=state, checkpoint=checkpoint)
    out = os.path.join(work_dir, "personal.tflite")
    save_model(out, session.model_file, session.labels, session.state(), {"training": {"epochs": epochs}})
    return out, result.history


def classify(model_path, photos):
    """[(photo, best label, probability)] with the personal model (unreadable photos skipped)."""
    predictions, _ = evaluate.top_k(Session(model_path), photos, k=1)
    return [(p["path"], p["top_k"][0]["label"], p["top_k"][0]["probability"]) for p in predictions]


if __name__ == "__main__":
    model, photos_dir, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    personal, history = personalise(model, photos_dir, work)
    print(f"trained {len(history)} epochs, loss {history[-1]['loss']:.3f}")
    for photo, label, p in classify(personal, sys.argv[4:]):
        print(f"{photo}: {label} ({p:.0%})")
